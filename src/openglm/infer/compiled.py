"""Decoding steps compiled by TorchInductor: one graph per token instead of ~30 framework calls a layer.

Eager decoding of a small model on a CPU spends much of each token in per-call overhead
(a 12-layer model with almost no weights still takes ~10 ms a token), and the matrix-vector
products of the libraries PyTorch calls stream weights well below the memory bandwidth. The
compiled step fixes both: inductor traces the model's own forward over one token (embedding
to logits) into one C++ graph, freezes the weights as constants, and with max-autotune picks
its own GEMM templates, whose pre-packed vectorised kernels stream weights faster than MKL or
oneDNN (measured in BENCHMARKS.md).

Shapes must be static for that, so the step attends over a KV cache of fixed capacity
(rounded up to a power of two, so a few buckets serve all lengths) under a mask of the
filled slots; the new token's keys and values are written at a slot given as a tensor
(`SlotKVCache`).
The prompt itself is run by the eager model (prefill is a few large matrix multiplies,
where compiling gains little). Compiling takes tens of seconds once per (batch size,
capacity) and process; freezing bakes in the weights, so compile after they are final.

    openglm.infer.compile_decoding(model)   # sets model.compiled_decoder; generate() takes it
"""

from __future__ import annotations

import shutil
import types
import warnings
import weakref

import torch

from ..model.glm import GLM, KVCache

MIN_CAPACITY = 256


def capacity_for(n_tokens: int) -> int:
    """The KV capacity bucket for a sequence of n_tokens: a power of two, at least MIN_CAPACITY."""
    return max(MIN_CAPACITY, 1 << (n_tokens - 1).bit_length())


class SlotKVCache(KVCache):
    """A KVCache as a compiled step extends it: the same per-layer tensors as `cache` (nothing is
    allocated), the new position written at a slot held in a tensor (a Python int would be baked
    into the graph: one graph per position), and every slot returned, for attention under a mask
    of the filled ones. GLM.forward's `cache.length += 1` advances that tensor."""

    def __init__(self, cache: KVCache):
        self.k, self.v, self.max_len = cache.k, cache.v, cache.max_len
        self.length = torch.full((1,), cache.length, dtype=torch.long, device=cache.k[0].device)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        self.k[layer].index_copy_(2, self.length, k)
        self.v[layer].index_copy_(2, self.length, v)
        return self.k[layer], self.v[layer]


def _next_token_logits(model: GLM, ids, position_ids, mask, cache: SlotKVCache) -> torch.Tensor:
    """What the compiled step traces: the model's own forward over one new token."""
    return model(ids, attention_mask=mask, position_ids=position_ids, cache=cache)[:, -1]


class CompiledDecoder:
    """A model's one-token decoding step, compiled; `compile_decoding` attaches it to the model as
    `model.compiled_decoder`. Call `step` with the eager prefill's cache."""

    def __init__(self, model: GLM):
        # weak: the model holds this decoder, and needs no cycle to be freed
        self._model = weakref.ref(model)
        # a code object of its own: dynamo caches graphs (and counts recompiles against its limit)
        # per code object, so decoders sharing one would fail after a few models in one process
        own = types.FunctionType(_next_token_logits.__code__.replace(), _next_token_logits.__globals__)
        # autotuning picks the float GEMMs' kernels; a quantized model's matmuls are PyTorch's own
        # INT8/INT4 kernels already, and tuning them only made the first token ~3x slower
        tune = getattr(model, "quantization", None) is None
        self._step = torch.compile(own, fullgraph=True,
                                   options={"max_autotune": tune, "guard_filter_fn": self.keep_guards})

    @property
    def model(self) -> GLM:
        return self._model()

    def new_cache(self, batch_size: int, n_tokens: int) -> KVCache:
        return self.model.new_cache(batch_size, capacity_for(n_tokens))

    @torch.inference_mode()
    def step(self, ids: torch.Tensor, valid: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Logits [B, vocab] for the next token after ids [B, 1], written at slot cache.length.

        valid [B, n] (n = cache.length + 1): 1 where a row has a real token (0 = left padding),
        the new token included. Advances cache.length like the eager forward.
        """
        n = cache.length + 1
        mask = torch.zeros(ids.shape[0], 1, 1, cache.max_len, dtype=torch.bool, device=ids.device)
        mask[:, 0, 0, :n] = valid.bool()
        position_ids = valid.long().sum(-1, keepdim=True) - 1
        # freezing (weights as constants) is what lets inductor pre-pack them for its GEMM templates
        with torch._inductor.config.patch(freezing=True, size_asserts=False, alignment_asserts=False):
            logits = self._step(self.model, ids, position_ids, mask, SlotKVCache(cache))
        cache.length = n
        return logits

    def keep_guards(self, entries) -> list[bool]:
        """Which of dynamo's guards to check before each step. The weights are frozen into the
        graph, so re-checking every module and parameter of the model (~10 guards a layer, 0.5 ms
        of a 12-layer model's 26 ms token) is useless work; only the model's identity matters (a
        second model of the same shape must compile its own graph), and the guard on its final
        norm's weight (dynamo matches a parameter by id) gives that. torch's public filter finds the module
        guards; the rest goes by the guarded values. tests/infer/test_compiled.py fails if either
        stops holding."""
        model = self.model
        identity = (model, model.final_norm.weight)
        modules = torch.compiler.skip_guard_on_all_nn_modules_unsafe(entries)
        return [keep or (e.has_value and any(e.value is x for x in identity)) for keep, e in zip(modules, entries)]


def compile_decoding(model: GLM) -> GLM:
    """Make generation with this model decode through a compiled step (see module docstring):
    attaches a CompiledDecoder as `model.compiled_decoder`, which generate_ids takes."""
    if model.training:
        raise ValueError("compile_decoding needs a model in eval mode (model.for_inference())")
    if model.final_norm.weight.device.type == "cpu":
        from torch._inductor.cpp_builder import get_cpp_compiler

        cxx = get_cpp_compiler()
        if not shutil.which(cxx):
            raise RuntimeError(f"compile_decoding builds C++ kernels but the compiler {cxx!r} is not on PATH "
                               "(install g++, or set CXX)")
    # RoPE multiplies complex numbers, which inductor runs as library calls: a few per layer, ~1% of
    # a token (measured), not worth a second, real-valued RoPE; its warning would only alarm users.
    warnings.filterwarnings("ignore", message="Torchinductor does not support code generation for complex")
    model.compiled_decoder = CompiledDecoder(model)
    return model


def compiled_decoder(model: GLM) -> CompiledDecoder | None:
    """The model's compiled decoder, if compile_decoding was called on it."""
    return getattr(model, "compiled_decoder", None)
