"""Decoding steps compiled by TorchInductor: one graph per token instead of ~30 framework calls a layer.

Eager decoding of a small model on a CPU spends much of each token in per-call overhead
(a 12-layer model with almost no weights still takes ~10 ms a token), and the matrix-vector
products of the libraries PyTorch calls stream weights well below the memory bandwidth. The
compiled step fixes both: inductor traces the whole token (embedding to logits) into one
C++ graph, freezes the weights as constants, and with max-autotune picks its own GEMM
templates, whose pre-packed vectorised kernels stream weights faster than MKL or oneDNN
(measured in BENCHMARKS.md).

Shapes must be static for that, so the step attends over a KV cache of fixed capacity
(rounded up to a power of two, so a few buckets serve all lengths) under a mask of the
filled slots; the new token's keys and values are written at a slot given as a tensor.
The prompt itself is run by the eager model (prefill is a few large matrix multiplies,
where compiling gains little). Compiling takes tens of seconds once per (batch size,
capacity) and process; freezing bakes in the weights, so compile after they are final.

    openglm.infer.compile_decoding(model)   # later generate() calls take the compiled path
"""

from __future__ import annotations

import shutil
import warnings
import weakref

import torch

from ..model.glm import GLM, KVCache, rope_rotations

MIN_CAPACITY = 256


def capacity_for(n_tokens: int) -> int:
    """The KV capacity bucket for a sequence of n_tokens: a power of two, at least MIN_CAPACITY."""
    return max(MIN_CAPACITY, 1 << (n_tokens - 1).bit_length())


class _SlotCache:
    """The view of a KVCache that a compiled step sees: it writes one position at a slot held
    in a tensor (a changing Python int would recompile the graph) and returns every slot."""

    def __init__(self, cache: KVCache):
        self.k, self.v = cache.k, cache.v
        self.slot = torch.full((1,), cache.length, dtype=torch.long, device=cache.k[0].device)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        self.k[layer].index_copy_(2, self.slot, k)
        self.v[layer].index_copy_(2, self.slot, v)
        return self.k[layer], self.v[layer]


class CompiledDecoder:
    """A model's one-token decoding step, compiled; call it with the eager prefill's cache."""

    def __init__(self, model: GLM):
        # weak: the registry's keys are weak, and a strong reference from its value would keep
        # every compiled model alive for the life of the process
        self._model = weakref.ref(model)
        self._step = torch.compile(self._eager_step, fullgraph=True,
                                   options={"max_autotune": True, "guard_filter_fn": _keep_guard})

    @property
    def model(self) -> GLM:
        return self._model()

    def _eager_step(self, ids, position_ids, mask, cache: _SlotCache) -> torch.Tensor:
        m = self.model
        x = m.embed(ids)
        rotations = rope_rotations(m.config, position_ids)
        for block in m.layers:
            x = block(x, rotations, mask, False, cache)
        return m.lm_head(m.final_norm(x))[:, -1].float()

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
            logits = self._step(ids, position_ids, mask, _SlotCache(cache))
        cache.length = n
        return logits


# How dynamo names what the step reaches through the model, and the model's embedding table.
_MODEL_GUARDS = "self._model()."
_MODEL_IDENTITY = _MODEL_GUARDS + "_modules['embed']._parameters['weight']"


def _keep_guard(entries) -> list[bool]:
    """Which of dynamo's guards to check before each step. The weights are frozen into the graph,
    so re-checking every module and parameter of the model (~10 guards a layer, 0.5 ms of a
    12-layer model's 26 ms token) is useless work; only the model's identity matters (a second
    model of the same shape must compile its own graph), and its embedding table gives that."""
    return [not e.name.startswith(_MODEL_GUARDS) or e.name == _MODEL_IDENTITY for e in entries]


_DECODERS: weakref.WeakKeyDictionary[GLM, CompiledDecoder] = weakref.WeakKeyDictionary()


def compile_decoding(model: GLM) -> GLM:
    """Make generation with this model decode through a compiled step (see module docstring)."""
    if model.training:
        raise ValueError("compile_decoding needs a model in eval mode (model.for_inference())")
    if model.embed.weight.device.type == "cpu":
        from torch._inductor.cpp_builder import get_cpp_compiler

        cxx = get_cpp_compiler()
        if not shutil.which(cxx):
            raise RuntimeError(f"compile_decoding builds C++ kernels but the compiler {cxx!r} is not on PATH "
                               "(install g++, or set CXX)")
    # RoPE multiplies complex numbers, which inductor runs as library calls: a few per layer, ~1% of
    # a token (measured), not worth a second, real-valued RoPE; its warning would only alarm users.
    warnings.filterwarnings("ignore", message="Torchinductor does not support code generation for complex")
    _DECODERS[model] = CompiledDecoder(model)
    return model


def compiled_decoder(model: GLM) -> CompiledDecoder | None:
    """The model's compiled decoder, if compile_decoding was called on it."""
    return _DECODERS.get(model)
