"""The GLM-4 transformer in one file: read it top to bottom.

Block (pre-norm):  x = x + Attn(RMSNorm(x));  x = x + MLP(RMSNorm(x))
GLM-4-0414 adds "sandwich" norms on the attention and MLP outputs before each residual add.
Attention: fused QKV projection (the only biases in the model), GQA, partial interleaved RoPE.
MLP: SwiGLU with a fused gate/up projection (first half gated by SiLU, times the second half).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .config import GLMConfig
from .head_loss import head_cross_entropy

IGNORE = -100  # a target that takes no loss (transformers' convention)


def _onednn_linear_dtypes() -> frozenset:
    """The dtypes whose linear layers oneDNN runs (and packs) on this CPU, found by trying each.

    fp32 runs everywhere; bf16 and fp16 need AVX-512 (or AVX-NE-CONVERT). Without it oneDNN
    refuses them, and PyTorch's own half-precision matmul is scalar code: on an AVX2 Zen 3 it
    multiplied bf16 at 16 GFLOP/s against 96 for fp32 (2 threads, 512 x 768 x 2048).
    """
    ok = set()
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        try:
            w = torch.ops.mkldnn._reorder_linear_weight(torch.ones(8, 8, dtype=dtype), 1)
            torch.ops.mkldnn._linear_pointwise(torch.ones(1, 8, dtype=dtype), w, None, "none", [], "")
            ok.add(dtype)
        except (AttributeError, RuntimeError):
            pass
    return frozenset(ok)


_ONEDNN = _onednn_linear_dtypes() if torch.backends.mkldnn.is_available() else frozenset()


def cpu_computes_natively(dtype: torch.dtype) -> bool:
    """Whether this CPU multiplies `dtype` matrices at full speed (fp32: always)."""
    return dtype == torch.float32 or dtype in _ONEDNN


FUSE_MIN_ROWS = 128  # see Linear.fuses


def _cpu_inference(t: torch.Tensor) -> bool:
    """Whether t is on the CPU outside autograd and outside a compiled graph: where the model may
    take its inference-only routes. The flags come first, so a compiled graph never guards on t."""
    return not torch.compiler.is_compiling() and not torch.is_grad_enabled() and t.device.type == "cpu"


class Linear(nn.Linear):
    """nn.Linear whose CPU inference path calls oneDNN directly.

    Measured on AMD EPYC, 2 threads (see BENCHMARKS.md): PyTorch's default CPU GEMM (MKL)
    reaches ~180 GFLOP/s fp32 where oneDNN reaches ~212, and for one-token decoding (a
    matrix-vector product) MKL streams weights at ~13 GB/s where oneDNN with its own
    pre-packed weight layout streams ~33 GB/s fp32 and ~21 GB/s bf16. Packing keeps a
    second copy of the weight, so it is opt-in (GLM.pack_weights); it follows in-place
    weight updates. Training (autograd) and compiled graphs (inductor picks its own kernels)
    take F.linear.
    """

    packed = False

    def _onednn(self, x: torch.Tensor) -> bool:
        return _cpu_inference(x) and x.dtype in _ONEDNN and x.dtype == self.weight.dtype

    def fuses(self, x: torch.Tensor) -> bool:
        """Whether callers should use `fused` on x instead of calling the layer: oneDNN runs it, and
        x has prompt-many rows. At a decoding step's few rows, the extra GEMM call of a split
        SwiGLU costs more than the passes it saves (eager decode 4% slower). A subclass whose
        forward changes the output (LoRA) says no while it does."""
        return self._onednn(x) and x.numel() >= FUSE_MIN_ROWS * x.shape[-1]  # no shape guard when compiling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fused(x) if self._onednn(x) else F.linear(x, self.weight, self.bias)

    def fused(self, x: torch.Tensor, rows: tuple[int, int] | None = None, silu: bool = False,
              times: torch.Tensor | None = None, plus: torch.Tensor | None = None) -> torch.Tensor:
        """oneDNN's linear (only where it runs x, see `fuses`) over output rows [start, end) of the
        weight (all if None), with at most one elementwise step fused into the GEMM's epilogue:
        silu(y), y * times or y + plus. Each saves a separate pass over a prompt's activations.
        Row ranges read the plain weight: packing pays for decoding's one row, not for prompts,
        and a packed copy per range would add to the packed copy of the whole."""
        w, b = self.weight, self.bias
        if rows is not None:
            w, b = w[rows[0]:rows[1]], None if b is None else b[rows[0]:rows[1]]
        elif self.packed:
            w = self._packed_weight()
        if times is not None or plus is not None:
            return torch.ops.mkldnn._linear_pointwise.binary(x, plus if times is None else times, w, b,
                                                             "add" if times is None else "mul")
        return torch.ops.mkldnn._linear_pointwise(x, w, b, "swish" if silu else "none", [], "")

    def _packed_weight(self) -> torch.Tensor:
        key = (self.weight.data_ptr(), self.weight._version, self.weight.dtype)
        if getattr(self, "_pack_key", None) != key:
            self._pack = torch.ops.mkldnn._reorder_linear_weight(self.weight.detach(), 1)
            self._pack_key = key
        return self._pack


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One fused kernel; it accumulates the mean square in fp32 even for bf16 inputs.
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def rope_rotations(cfg: GLMConfig, position_ids: torch.Tensor) -> torch.Tensor:
    """Unit complex numbers [batch, seq, 1, head_dim/2] that rotate each pair of dims.

    GLM rotates adjacent pairs (x[2i], x[2i+1]) of only the first `rotary_dim` dims of a head
    ("2D" RoPE with plain 1D positions); the remaining pairs get rotation 1+0j, so one complex
    multiply handles a whole head and leaves the pass-through half bit-exact.
    """
    dim = cfg.rotary_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
    angles = position_ids[..., None].float() * inv_freq.to(position_ids.device)
    rot = torch.polar(torch.ones_like(angles), angles)
    keep = torch.ones(*angles.shape[:-1], (cfg.head_dim - dim) // 2, dtype=rot.dtype, device=rot.device)
    return torch.cat((rot, keep), dim=-1)[:, :, None, :]


def apply_rope(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """x: [batch, seq, heads, head_dim] -> rotated copy (computed in fp32, returned in x's dtype)."""
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs * rotations).flatten(-2).to(x.dtype)


class KVCache:
    """Preallocated keys/values, per layer a [batch, kv_heads, max_len, head_dim] tensor of its own.

    Preallocation means decoding never reallocates or concatenates; attention reads a
    view of the first `length` slots. Separate tensors per layer (not slices of one) let a
    compiled step write a layer's slot in place (writing into a view of a graph input makes
    inductor copy the whole input).
    """

    def __init__(self, cfg: GLMConfig, batch_size: int, max_len: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        shape = (batch_size, cfg.num_kv_heads, max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.num_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.num_layers)]
        self.max_len = max_len
        self.length = 0  # filled slots; advanced by GLM.forward after all layers ran

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        start, end = self.length, self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache full: {end} positions needed, {self.max_len} allocated")
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def reset(self) -> None:
        self.length = 0


class Attention(nn.Module):
    def __init__(self, cfg: GLMConfig, layer: int):
        super().__init__()
        self.cfg, self.layer = cfg, layer
        self.qkv = Linear(cfg.hidden_size, cfg.q_size + 2 * cfg.kv_size, bias=cfg.qkv_bias)
        self.proj = Linear(cfg.q_size, cfg.hidden_size, bias=False)

    def forward(self, x, rotations, mask, is_causal, cache, doc_lengths=None, keep=0, residual=None):
        """keep > 0: only the last `keep` positions' outputs are wanted (the last layer of a
        prefill): every position still writes its key and value, but only those query.
        residual: added to the output (inside the projection's GEMM where oneDNN runs it)."""
        cfg = self.cfg
        B, T, _ = x.shape
        H, KV = cfg.num_heads, cfg.num_kv_heads
        qkv = self.qkv(x).view(B, T, H + 2 * KV, cfg.head_dim)
        qk = apply_rope(qkv[:, :, : H + KV], rotations)  # queries and keys rotate together
        q, k, v = qk[:, :, :H].transpose(1, 2), qk[:, :, H:].transpose(1, 2), qkv[:, :, H + KV :].transpose(1, 2)
        if cache is not None:
            k, v = cache.update(self.layer, k, v)
        if keep:
            q, mask, is_causal = q[:, :, -keep:], _last_query_rows(mask, is_causal, keep, k), False
        if doc_lengths is not None:
            y = document_attention(q, k, v, doc_lengths)
        elif is_causal and _halving_pays(q, k):
            y = halved_causal_attention(q, k, v)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=KV != H)
        y = y.transpose(1, 2).reshape(B, q.shape[2], cfg.q_size)
        if residual is not None and self.proj.fuses(y):
            return self.proj.fused(y, plus=residual)
        y = self.proj(y)
        return y if residual is None else residual + y


def _last_query_rows(mask, is_causal, keep, k):
    """The attention mask of the last `keep` queries over the keys k [B, KV, S, D]. SDPA's
    is_causal aligns the diagonal top-left when there are fewer queries than keys, so causality
    becomes an explicit bottom-right mask; the very last query sees every key and needs none."""
    if mask is not None:
        return mask[:, :, -keep:]
    if not is_causal or keep == 1:
        return None
    S = k.shape[2]
    return torch.ones(keep, S, dtype=torch.bool, device=k.device).tril(S - keep)


# Prompt lengths at which halved_causal_attention beat one causal SDPA call (fp32, 2 threads;
# BENCHMARKS.md). In bf16 the kernel's own blocking already skips, and halving lost.
_HALVING_LENGTHS = range(384, 577)


def _halving_pays(q, k) -> bool:
    return (_cpu_inference(q) and q.dtype == torch.float32 and q.shape[2] == k.shape[2]
            and q.shape[2] in _HALVING_LENGTHS)


def halved_causal_attention(q, k, v) -> torch.Tensor:
    """Causal attention of q [B, H, T, D] over k/v [B, KV, T, D] in three calls, for CPU inference.

    PyTorch's CPU flash kernel (fp32) scores keys in blocks of 512 and skips only whole blocks
    above the diagonal, so a causal prompt of up to ~600 tokens costs it almost all T^2 scores.
    Split at the middle: the first half of the queries over the first half of the keys (causal),
    the second half over the first half (full) and over itself (causal): 3/4 of the scores. The second half's
    two partial results combine by their log-sum-exps: weight sigmoid(lse1 - lse2) on the first.
    Returns [B, H, T, D] as a view of a [B, T, H, D] buffer, so the output projection's reshape
    is free.
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


def document_attention(q, k, v, lengths: list[list[int]]) -> torch.Tensor:
    """Causal attention inside each packed document, one SDPA call per document.

    q [B, H, T, D], k/v [B, KV, T, D]; lengths[b] lists the lengths of row b's documents, in
    order, summing to T. A block-diagonal mask over the whole row would make the kernel visit
    all T x T scores (it cannot skip arbitrary masked blocks); per document the work is the sum
    of n_i^2 / 2. Rows and documents are cut with unbind/split, whose backward passes join the
    gradient pieces, rather than slicing (each slice's backward writes a zero-filled full copy).
    """
    gqa = q.shape[1] != k.shape[1]
    rows = []
    for qb, kb, vb, n in zip(q.unbind(0), k.unbind(0), v.unbind(0), lengths):
        rows.append(torch.cat([F.scaled_dot_product_attention(qd[None], kd[None], vd[None], is_causal=True,
                                                              enable_gqa=gqa)
                               for qd, kd, vd in zip(qb.split(n, 1), kb.split(n, 1), vb.split(n, 1))], dim=2))
    return torch.cat(rows, dim=0)


def document_lengths(doc_ids: torch.Tensor) -> list[list[int]]:
    """[B, T] document number per token -> per row, the lengths of its runs of equal numbers."""
    B, T = doc_ids.shape
    starts = [[0] for _ in range(B)]
    for b, i in (doc_ids[:, 1:] != doc_ids[:, :-1]).nonzero().tolist():
        starts[b].append(i + 1)
    return [[e - s for s, e in zip(row, row[1:] + [T])] for row in starts]


class MLP(nn.Module):
    def __init__(self, cfg: GLMConfig):
        super().__init__()
        self.gate_up = Linear(cfg.hidden_size, 2 * cfg.ffn_hidden_size, bias=False)
        self.down = Linear(cfg.ffn_hidden_size, cfg.hidden_size, bias=False)

    def forward(self, x, residual=None):
        """SwiGLU(x) (+ residual). Where oneDNN runs the layers, gate and up are two GEMMs over the
        halves of the fused weight with SiLU and the product in their epilogues, and the down
        projection adds the residual: no separate pass over the [tokens, ffn] activations."""
        if self.gate_up.fuses(x) and self.down.fuses(x):
            n = self.down.in_features
            gate = self.gate_up.fused(x, rows=(0, n), silu=True)
            return self.down.fused(self.gate_up.fused(x, rows=(n, 2 * n), times=gate), plus=residual)
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        h = self.down(F.silu(gate) * up)
        return h if residual is None else residual + h


class Block(nn.Module):
    def __init__(self, cfg: GLMConfig, layer: int):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.attn = Attention(cfg, layer)
        self.mlp_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.mlp = MLP(cfg)
        if cfg.sandwich_norm:
            self.post_attn_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
            self.post_mlp_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.sandwich = cfg.sandwich_norm

    def forward(self, x, rotations, mask, is_causal, cache, doc_lengths=None, keep=0):
        skip = x[:, -keep:] if keep else x
        args = (rotations, mask, is_causal, cache, doc_lengths, keep)
        if self.sandwich:  # the output is normed before the residual add, which cannot be fused
            x = skip + self.post_attn_norm(self.attn(self.attn_norm(x), *args))
            return x + self.post_mlp_norm(self.mlp(self.mlp_norm(x)))
        x = self.attn(self.attn_norm(x), *args, residual=skip)
        return self.mlp(self.mlp_norm(x), residual=x)


class GLM(nn.Module):
    """A GLM-4 family causal LM. `GLM(cfg)(input_ids)` -> fp32 logits [batch, seq, vocab]."""

    def __init__(self, cfg: GLMConfig):
        super().__init__()
        self.config = cfg
        self.gradient_checkpointing = False
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.num_layers))
        self.final_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """N(0, init_std) for every matrix; the two residual-writing projections are scaled by
        1/sqrt(2 * num_layers) (GPT-2) so the residual stream's variance does not grow with
        depth; biases start at zero and norm gains at one. A no-op cost on the meta device."""
        std = self.config.init_std
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif p.dim() == 1:
                p.zero_()
            elif name.endswith(("attn.proj.weight", "mlp.down.weight")):
                p.normal_(0.0, std / math.sqrt(2 * self.config.num_layers))
            else:
                p.normal_(0.0, std)

    def pack_weights(self, enable: bool = True) -> GLM:
        """Keep oneDNN-packed copies of the linear weights for fast CPU inference (2x weight RAM)."""
        for m in self.modules():
            if isinstance(m, Linear):
                m.packed = enable and m.weight.dtype in _ONEDNN
                if not m.packed:
                    m.__dict__.pop("_pack", None)
                    m.__dict__.pop("_pack_key", None)
        return self

    def for_inference(self) -> GLM:
        """Eval mode, ready for fast generation: on a CPU that cannot multiply the weights' half
        dtype natively (no AVX-512) they become fp32, and linear weights are packed for oneDNN."""
        p = self.embed.weight
        if p.device.type == "cpu" and not cpu_computes_natively(p.dtype):
            self.float()
        return self.eval().pack_weights()

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        p = self.embed.weight
        return KVCache(self.config, batch_size, max_len or self.config.max_seq_len, p.dtype, p.device)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        logits_to_keep: int = 0,
        logits_at: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        loss_weights: torch.Tensor | None = None,
        doc_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids [B, T]; attention_mask [B, past+T] of 1 (token) / 0 (left padding), or a
        ready boolean [B, 1, T, past+T] mask (True = attend) for any pattern, e.g. GLM's
        bidirectional-prefix blank infilling; position_ids [B, T] (default: from a 2D mask, so
        left padding starts at position 0); cache: a KVCache to read and extend;
        logits_to_keep: only the last N positions (0 = all);
        logits_at: a boolean [B, T] mask; only those positions' logits, flattened to [N, vocab]
        (training: positions without a target need no output head, the costliest matmul of a
        small model);
        targets [B, T] (IGNORE = none): return instead the cross-entropy summed over positions
        with a target, each times loss_weights [B, T] if given (fused head + loss, see head_loss);
        doc_ids [B, T]: packed documents, the document number of each token (contiguous runs;
        padding is one more run): each token attends causally within its run, computed run by
        run (training; instead of attention_mask, no cache). Positions default to restarting at 0
        in every run.
        """
        B, T = input_ids.shape
        past = cache.length if cache is not None else 0
        doc_lengths = None
        if doc_ids is not None:
            if cache is not None or attention_mask is not None:
                raise ValueError("doc_ids replaces attention_mask and cannot extend a KV cache")
            doc_lengths = document_lengths(doc_ids)
            if position_ids is None:
                position_ids = torch.stack([torch.cat([torch.arange(n, device=input_ids.device) for n in row])
                                            for row in doc_lengths])
        if position_ids is None:
            if attention_mask is not None and attention_mask.dim() == 2:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:]
            else:
                position_ids = torch.arange(past, past + T, device=input_ids.device).expand(B, T)
        if attention_mask is not None and attention_mask.dim() == 4:
            mask, is_causal = attention_mask.bool(), False
        else:
            mask, is_causal = self._attention_mask(attention_mask, B, T, past, input_ids.device)
        x = self.embed(input_ids)
        rotations = rope_rotations(self.config, position_ids)
        # As llama.cpp does: when only the last positions' logits are wanted, the last layer
        # computes just their outputs (about 1/num_layers of a long prompt's prefill).
        plain = targets is None and logits_at is None and doc_lengths is None
        wanted = logits_to_keep if plain and 0 < logits_to_keep < T else 0
        last = len(self.layers) - 1
        for i, block in enumerate(self.layers):
            keep = wanted if i == last else 0
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                # recompute each block in the backward pass: activations for 1 block, not all
                x = checkpoint(block, x, rotations, mask, is_causal, cache, doc_lengths, keep, use_reentrant=False)
            else:
                x = block(x, rotations, mask, is_causal, cache, doc_lengths, keep)
        if cache is not None:
            cache.length += T
        if logits_to_keep:
            x = x[:, -logits_to_keep:]
        if targets is not None:
            return self._loss(x, targets, loss_weights)
        if logits_at is not None:
            x = x[logits_at]
        return self.lm_head(self.final_norm(x)).float()

    def _loss(self, x, targets, loss_weights):
        keep = targets != IGNORE
        x, targets = self.final_norm(x[keep]), targets[keep]
        w = None if loss_weights is None else loss_weights[keep]
        if type(self.lm_head) is Linear:
            return head_cross_entropy(x, self.lm_head.weight, targets, w)
        # a LoRA head adds its low-rank delta in its forward: take the plain path
        nll = F.cross_entropy(self.lm_head(x).float(), targets, reduction="none")
        return nll.sum() if w is None else (nll * w).sum()

    @staticmethod
    def _attention_mask(attention_mask, B, T, past, device):
        """A boolean [B, 1, T, past+T] mask (True = attend), or None with SDPA's causal flag.

        The unpadded cases take SDPA's fast paths: a plain prompt uses is_causal, and one new
        token attends to the whole cache with no mask at all.
        """
        if attention_mask is None or bool(attention_mask.all()):
            if past == 0:
                return None, T > 1
            if T == 1:
                return None, False
        S = past + T
        q_pos = torch.arange(past, S, device=device)[:, None]
        k_pos = torch.arange(S, device=device)[None, :]
        mask = (k_pos <= q_pos)[None, None]
        if attention_mask is not None:
            valid = attention_mask.bool()[:, None, None, :]
            # A padding query sees only itself: a row with every key masked would give NaN,
            # and NaN values leak through masked (zero-weight) attention in later layers.
            mask = mask & (valid | (k_pos == q_pos)[None, None])
        return mask.expand(B, 1, T, S), False


def count_parameters(model: nn.Module) -> int:
    """Unique parameters (a tied head counts once). Works on the meta device."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
