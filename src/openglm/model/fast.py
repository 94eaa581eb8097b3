"""CPU inference variants of the model's modules, swapped in by `GLM.for_inference()`.

glm.py is the reference that training runs; these compute the same to float rounding
(tests/model/test_inference_paths.py), faster on a CPU (measurements: BENCHMARKS.md):

- `FastLinear` calls oneDNN directly, optionally on its pre-packed weight layout, and can put
  one elementwise step into the GEMM's epilogue (SiLU, a product, a residual add);
- `FastMLP` and `FastBlock` use those epilogues on prompt-sized inputs, so SwiGLU and the
  residual adds make no separate pass over the activations;
- `FastAttention` splits causal fp32 prompts of 384-576 tokens into three SDPA calls.

`use_fast_paths` swaps each module's class in place, the way FP8 training swaps linear layers:
parameters, their names and sharing (a tied head) stay as they are, and so does the state dict.
Under autograd or inside a compiled graph every variant computes as its reference does.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import cpu
from .glm import MLP, Attention, Block, Linear

FUSE_MIN_ROWS = 128  # fewer rows (a decoding step): a split SwiGLU's extra GEMM call costs more than it saves
HALVING_LENGTHS = range(384, 577)  # where halved_causal_attention beat one SDPA call (fp32, 2 threads)


def cpu_inference(t: torch.Tensor) -> bool:
    """Whether t is on the CPU, outside autograd (which needs the reference ops' backward) and
    outside a compiled graph (where inductor picks its own kernels). The flags come first, so a
    compiled graph never guards on t."""
    return not torch.compiler.is_compiling() and not torch.is_grad_enabled() and t.device.type == "cpu"


def onednn_runs(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether oneDNN takes this linear layer: CPU inference in a dtype it accepts here."""
    return cpu_inference(x) and x.dtype in cpu.ONEDNN_DTYPES and x.dtype == weight.dtype


def fuses(layer: nn.Module, x: torch.Tensor) -> bool:
    """Whether to use layer.fused on x: a FastLinear (not a LoRA layer, whose delta would come after
    the epilogue) that oneDNN runs, on prompt-many rows."""
    return (type(layer) is FastLinear and onednn_runs(x, layer.weight)
            and x.numel() >= FUSE_MIN_ROWS * x.shape[-1])


class FastLinear(Linear):
    """A linear layer that calls oneDNN directly where it runs (see `onednn_runs`).

    On AMD EPYC, 2 threads, MKL (F.linear) reached ~180 GFLOP/s fp32 where oneDNN reached ~212,
    and for one-token decoding MKL streamed weights at ~13 GB/s where oneDNN's packed layout
    streamed ~33 GB/s fp32. The packed copy doubles the weight's memory, hence `packed` is a
    choice; it is rebuilt after an in-place weight update that bumps the weight's version (fused
    optimizers do not: call `use_fast_paths` again after their steps).
    """

    packed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fused(x) if onednn_runs(x, self.weight) else F.linear(x, self.weight, self.bias)

    def fused(self, x: torch.Tensor, rows: tuple[int, int] | None = None, silu: bool = False,
              times: torch.Tensor | None = None, plus: torch.Tensor | None = None) -> torch.Tensor:
        """oneDNN's linear over output rows [start, end) of the weight (all if None), with at most
        one elementwise step in the GEMM's epilogue: silu(y), y * times or y + plus. Row ranges
        read the plain weight: packing pays for decoding's one row, not for prompts, and a packed
        copy per range would add to the packed copy of the whole."""
        w, b = self.weight, self.bias
        if rows is not None:
            w, b = w[rows[0]:rows[1]], None if b is None else b[rows[0]:rows[1]]
        elif self.packed:
            w = self._packed_weight()
        if times is not None or plus is not None:
            return torch.ops.mkldnn._linear_pointwise.binary(x, plus if times is None else times, w, b,
                                                             "add" if times is None else "mul")
        return torch.ops.mkldnn._linear_pointwise(x, w, b, "swish" if silu else "none", [], "")

    def __getstate__(self):
        # the packed copy is an opaque oneDNN tensor, which deepcopy and pickle cannot read; it is rebuilt on use
        return {k: v for k, v in super().__getstate__().items() if k not in ("_pack", "_pack_key")}

    def _packed_weight(self) -> torch.Tensor:
        key = (self.weight.data_ptr(), self.weight._version, self.weight.dtype)
        if getattr(self, "_pack_key", None) != key:
            self._pack = torch.ops.mkldnn._reorder_linear_weight(self.weight.detach(), 1)
            self._pack_key = key
        return self._pack


class FastAttention(Attention):
    def forward(self, x, rotations, mask, is_causal, cache, doc_lengths=None, keep=0, residual=None):
        """As Attention's, plus `residual` added to the output (inside the projection's GEMM where
        it fuses)."""
        y = self.heads(x, rotations, mask, is_causal, cache, doc_lengths, keep)
        if residual is None:
            return self.proj(y)
        return self.proj.fused(y, plus=residual) if fuses(self.proj, y) else residual + self.proj(y)

    def attend(self, q, k, v, mask, is_causal) -> torch.Tensor:
        if is_causal and halving_pays(q, k):
            return halved_causal_attention(q, k, v)
        return super().attend(q, k, v, mask, is_causal)


def halving_pays(q: torch.Tensor, k: torch.Tensor) -> bool:
    """A causal fp32 prompt (no cache before it) of a length where three calls beat one. In bf16
    the kernel's own blocking already skips, and halving lost."""
    return (cpu_inference(q) and q.dtype == torch.float32 and q.shape[2] == k.shape[2]
            and q.shape[2] in HALVING_LENGTHS)


def halved_causal_attention(q, k, v) -> torch.Tensor:
    """Causal attention of q [B, H, T, D] over k/v [B, KV, T, D] in three calls, for CPU inference.

    PyTorch's CPU flash kernel (fp32) scores keys in blocks of 512 and skips only whole blocks
    above the diagonal, so a causal prompt of up to ~600 tokens costs it almost all T^2 scores.
    Split at the middle: the first half of the queries over the first half of the keys (causal),
    the second half over the first half (full) and over itself (causal): 3/4 of the scores. The
    second half's two partial results combine by their log-sum-exps: weight sigmoid(lse1 - lse2)
    on the first. Returns [B, H, T, D] as a view of a [B, T, H, D] buffer, so the output
    projection's reshape is free.
    """
    attend = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    B, H, T, D = q.shape
    h = T // 2
    out = q.new_empty(B, T, H, D).transpose(1, 2)
    out[:, :, :h] = attend(q[:, :, :h], k[:, :, :h], v[:, :, :h], 0.0, True)[0]
    seen, lse_seen = attend(q[:, :, h:], k[:, :, :h], v[:, :, :h], 0.0, False)[:2]
    own, lse_own = attend(q[:, :, h:], k[:, :, h:], v[:, :, h:], 0.0, True)[:2]
    torch.lerp(own, seen, torch.sigmoid(lse_seen - lse_own).unsqueeze(-1).to(own.dtype), out=out[:, :, h:])
    return out


class FastMLP(MLP):
    def forward(self, x, residual=None):
        """SwiGLU(x) (+ residual). Where the layers fuse, gate and up are two GEMMs over the halves
        of the fused weight with SiLU and the product in their epilogues, and the down projection
        adds the residual: no separate pass over the [tokens, ffn] activations."""
        if fuses(self.gate_up, x) and fuses(self.down, x):
            n = self.down.in_features
            gate = self.gate_up.fused(x, rows=(0, n), silu=True)
            return self.down.fused(self.gate_up.fused(x, rows=(n, 2 * n), times=gate), plus=residual)
        h = super().forward(x)
        return h if residual is None else residual + h


class FastBlock(Block):
    def forward(self, x, rotations, mask, is_causal, cache, doc_lengths=None, keep=0):
        if self.sandwich:  # the outputs are normed before the residual adds, which cannot be fused
            return super().forward(x, rotations, mask, is_causal, cache, doc_lengths, keep)
        skip = x[:, -keep:] if keep else x
        x = self.attn(self.attn_norm(x), rotations, mask, is_causal, cache, doc_lengths, keep, residual=skip)
        return self.mlp(self.mlp_norm(x), residual=x)


FAST = {Linear: FastLinear, Attention: FastAttention, MLP: FastMLP, Block: FastBlock}
REFERENCE = {fast: ref for ref, fast in FAST.items()}


def use_fast_paths(model: nn.Module, pack: bool = True) -> nn.Module:
    """Swap the fast variants into `model` in place (see the module docstring); pack: keep oneDNN-
    packed weights where oneDNN runs their dtype, layer by layer while the copies fit in memory
    (cpu.fits: a large model is never doubled). Only exact reference types are swapped (a LoRA
    layer keeps its class). Returns the model."""
    packed_bytes = 0
    for m in model.modules():
        if type(m) in FAST:
            m.__class__ = FAST[type(m)]
        if type(m) is FastLinear:
            w = m.weight
            m.packed = pack and w.dtype in cpu.ONEDNN_DTYPES and cpu.fits(packed_bytes + w.nbytes)
            packed_bytes += w.nbytes if m.packed else 0
            _drop_pack(m)  # packed again on first use, from the weight as it is now
    return model


def use_reference_paths(model: nn.Module) -> nn.Module:
    """Undo use_fast_paths: every module computes as glm.py says. Returns the model."""
    for m in model.modules():
        if type(m) in REFERENCE:
            _drop_pack(m)
            m.__dict__.pop("packed", None)
            m.__class__ = REFERENCE[type(m)]
    return model


def uses_fast_paths(model: nn.Module) -> bool:
    return any(type(m) in REFERENCE for m in model.modules())


def _drop_pack(m: nn.Module) -> None:
    m.__dict__.pop("_pack", None)
    m.__dict__.pop("_pack_key", None)
