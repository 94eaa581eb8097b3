"""The GLM-4 transformer, the reference implementation: read it top to bottom.

Block (pre-norm):  x = x + Attn(RMSNorm(x));  x = x + MLP(RMSNorm(x))
GLM-4-0414 adds "sandwich" norms on the attention and MLP outputs before each residual add.
Attention: fused QKV projection (the only biases in the model), GQA, partial interleaved RoPE.
MLP: SwiGLU with a fused gate/up projection (first half gated by SiLU, times the second half).
Training runs these modules; `GLM.for_inference()` swaps in CPU inference ones (fast.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .cache import KVCache
from .config import GLMConfig
from .cpu import cpu_computes_natively, fits
from .head_loss import head_cross_entropy

IGNORE = -100  # a target that takes no loss (transformers' convention)


Linear = nn.Linear  # the model's linear layer (train.lora subclasses it; model/fast.py swaps it)


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


class Attention(nn.Module):
    def __init__(self, cfg: GLMConfig, layer: int):
        super().__init__()
        self.cfg, self.layer = cfg, layer
        self.qkv = Linear(cfg.hidden_size, cfg.q_size + 2 * cfg.kv_size, bias=cfg.qkv_bias)
        self.proj = Linear(cfg.q_size, cfg.hidden_size, bias=False)

    def forward(self, x, rotations, mask, is_causal, cache, doc_lengths=None, keep=0):
        return self.proj(self.heads(x, rotations, mask, is_causal, cache, doc_lengths, keep))

    def heads(self, x, rotations, mask, is_causal, cache, doc_lengths=None, keep=0):
        """The attention heads' outputs side by side [B, T, q_size], before the output projection.
        keep > 0: only the last `keep` positions' outputs are wanted (the last layer of a
        prefill): every position still writes its key and value, but only those query."""
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
        else:
            y = self.attend(q, k, v, mask, is_causal)
        return y.transpose(1, 2).reshape(B, q.shape[2], cfg.q_size)

    def attend(self, q, k, v, mask, is_causal) -> torch.Tensor:
        """Scaled dot-product attention of q [B, H, T, D] over k, v [B, KV, S, D] (GQA)."""
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                              enable_gqa=k.shape[1] != q.shape[1])


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


def document_attention(q, k, v, lengths: list[list[int]]) -> torch.Tensor:
    """Causal attention inside each packed document, one SDPA call per document: q [B, H, T, D],
    k/v [B, KV, T, D]; lengths[b]: row b's document lengths, in order, summing to T.
    A block-diagonal mask would make the kernel visit all T x T scores; per document the work is
    the sum of n_i^2 / 2. unbind/split cut rows and documents because their backward joins the
    gradient pieces (each slice's backward writes a zero-filled full copy)."""
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
    """SwiGLU: the first half of the fused gate/up projection, through SiLU, gates the second."""

    def __init__(self, cfg: GLMConfig):
        super().__init__()
        self.gate_up = Linear(cfg.hidden_size, 2 * cfg.ffn_hidden_size, bias=False)
        self.down = Linear(cfg.ffn_hidden_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


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
        skip = x[:, -keep:] if keep else x  # the positions the attention computes
        h = self.attn(self.attn_norm(x), rotations, mask, is_causal, cache, doc_lengths, keep)
        x = skip + (self.post_attn_norm(h) if self.sandwich else h)
        h = self.mlp(self.mlp_norm(x))
        return x + (self.post_mlp_norm(h) if self.sandwich else h)


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

    def for_inference(self, upcast: bool = True, pack: bool = True) -> GLM:
        """Eval mode with model/fast.py's CPU inference modules swapped in (same logits to float
        rounding; training runs this file's). upcast: half weights this CPU cannot multiply
        natively (no AVX-512) become fp32, where that fits in memory. pack: oneDNN-packed weight
        copies, as many as fit in memory (each doubles its layer's RAM)."""
        from .fast import use_fast_paths  # fast.py builds on this module

        p = self.final_norm.weight  # a float tensor in every model, quantized ones included
        if upcast and p.device.type == "cpu" and not cpu_computes_natively(p.dtype):
            half = sum(t.numel() for t in self.parameters() if t.is_floating_point())
            if fits(half * 2):  # fp32 takes 2 more bytes per weight
                self.float()
        return use_fast_paths(self.eval(), pack)

    def pack_weights(self, enable: bool = True) -> GLM:
        """for_inference's fast modules with (or without) packed weights; dtype and mode kept."""
        from .fast import use_fast_paths
        return use_fast_paths(self, enable)

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        p = self.final_norm.weight
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
        logits_to_keep: only the last N positions (0 = all); logits_at: a boolean [B, T] mask,
        only those positions' logits, flattened to [N, vocab] (training: positions without a
        target need no output head, the costliest matmul of a small model);
        targets [B, T] (IGNORE = none): return instead the cross-entropy summed over positions
        with a target, each times loss_weights [B, T] if given (fused head + loss, see head_loss);
        doc_ids [B, T]: packed documents, the document number of each token (contiguous runs;
        padding is one more run): each token attends causally within its run, computed run by
        run (training; instead of attention_mask, no cache). Positions default to restarting at 0
        in every run.
        """
        # As llama.cpp does: when only the last positions' logits are wanted, the last layer
        # computes just their outputs (about 1/num_layers of a long prompt's prefill).
        plain = targets is None and logits_at is None and doc_ids is None
        wanted = logits_to_keep if plain and 0 < logits_to_keep < input_ids.shape[1] else 0
        x = self._body(input_ids, attention_mask, position_ids, cache, doc_ids, wanted)
        if logits_to_keep:
            x = x[:, -logits_to_keep:]
        if targets is not None:
            return self._loss(x, targets, loss_weights)
        if logits_at is not None:
            x = x[logits_at]
        return self.lm_head(self.final_norm(x)).float()

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      position_ids: torch.Tensor | None = None, doc_ids: torch.Tensor | None = None,
                      at: torch.Tensor | None = None) -> torch.Tensor:
        """The final-normed hidden states [B, T, hidden] the output head reads (a reward model's
        head reads them too); arguments as in forward. at: a boolean [B, T] mask, only those
        positions, flattened to [N, hidden] (selected before the norm: no work on the rest)."""
        x = self._body(input_ids, attention_mask, position_ids, None, doc_ids, 0)
        return self.final_norm(x if at is None else x[at])

    def _body(self, input_ids, attention_mask, position_ids, cache, doc_ids, wanted) -> torch.Tensor:
        """Embedding and every block: the residual stream [B, T, hidden] before the final norm
        (of only the last `wanted` positions when wanted > 0)."""
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
        return x

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
        """A boolean [B, 1, T, past+T] mask (True = attend), or None with SDPA's causal flag:
        a plain prompt uses is_causal, one new token after an unpadded cache needs no mask."""
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
