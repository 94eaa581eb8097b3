"""Training objectives: causal LM (GLM-4) and GLM's autoregressive blank infilling.

Every batch is a dict of tensors: ``input_ids`` [B, T]; ``targets`` [B, T], the token to
predict at each position (already shifted; -100 = no loss); optionally ``attention_mask``
(a ready boolean [B, 1, T, T], True = attend) or ``doc_ids`` [B, T] (packed documents, see
``GLM.forward``), ``position_ids`` [B, T] and ``loss_weights`` [B, T]. An objective returns
the *sum* of weighted token losses of a micro-batch and says what that sum is normalised by
(``normalizer``); the trainer divides by the normaliser summed over every micro-batch and
process of the step, so the loss of a global batch does not depend on how it is split
(gradient accumulation, DDP, FSDP).

Blank infilling (GLM, Du et al. 2022; used by GLM-130B and ChatGLM-6B). From a text x,
spans are cut out and each replaced by one ``[MASK]`` (short spans, ~15% of tokens,
Poisson(3) lengths) or, in ``[gMASK]`` mode, one long suffix (50-100% of the text) is
replaced by ``[gMASK]``. The model reads Part A (the corrupted text) with bidirectional
attention, then generates each span after ``<sop>`` (Part B) causally, ending it with
``<eop>``; spans come in shuffled order. Only Part B is trained.

Positions. GLM used 2D positions: (position of the span's mask in Part A, position inside
the span 1..n). GLM-4 (whose model this is) has plain 1D RoPE positions, so we collapse the
pair to its sum: Part A token i is at i, and the j-th input token of a span (``<sop>`` is
j = 1) is at mask_position + j. A span is thus placed where its text continues from its
mask, and the relative distance from ``<sop>`` to its own mask (1) tells the model which
blank it is filling even though spans are shuffled. In [gMASK] mode this is exactly the
sequential numbering of GLM-4's own ``[gMASK]<sop>`` prompts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..model.glm import IGNORE


def prefix_lm_mask(n_context: torch.Tensor, T: int) -> torch.Tensor:
    """[B] Part A lengths -> [B, 1, T, T] bool: all of Part A sees all of Part A; later
    tokens see Part A and, causally, each other."""
    pos = torch.arange(T, device=n_context.device)
    causal = pos[None, :] <= pos[:, None]
    context = pos[None, None, :] < n_context[:, None, None]
    return (causal[None] | context)[:, None]


class LMObjective:
    """Weighted next-token cross entropy; serves pre-training, blank infilling and SFT."""

    def normalizer(self, batch: dict) -> torch.Tensor:
        w = batch.get("loss_weights")
        return w.sum() if w is not None else (batch["targets"] != IGNORE).sum().to(torch.float64)

    def __call__(self, model, batch: dict) -> tuple[torch.Tensor, dict]:
        return token_loss_sum(model, batch), {}


def token_logprobs(model, batch: dict, entropy: bool = False):
    """log p(target) per position [B, T] (0 where there is no target); with ``entropy``, also
    the entropy of the predicted distribution there [B, T].

    Logits are computed only where there is a target: in SFT most positions (system prompt,
    user and observation turns) have none.
    """
    targets = batch["targets"]
    has_target = targets != IGNORE
    logits = model(batch["input_ids"], attention_mask=batch.get("attention_mask"), doc_ids=batch.get("doc_ids"),
                   position_ids=batch.get("position_ids"), logits_at=has_target)
    nll = F.cross_entropy(logits, targets[has_target], reduction="none")
    scatter = lambda v: torch.zeros(targets.shape, dtype=v.dtype, device=v.device).masked_scatter(has_target, v)  # noqa: E731
    if not entropy:
        return scatter(-nll)
    logp = F.log_softmax(logits, -1)
    return scatter(-nll), scatter(-(logp.exp() * logp).sum(-1).detach())


def token_loss_sum(model, batch: dict) -> torch.Tensor:
    """Sum over targets of (weighted) cross entropy, by the model's fused head + loss."""
    return model(batch["input_ids"], attention_mask=batch.get("attention_mask"), doc_ids=batch.get("doc_ids"),
                 position_ids=batch.get("position_ids"), targets=batch["targets"],
                 loss_weights=batch.get("loss_weights"))


def causal_collate(rows: list[np.ndarray | None], seq_len: int) -> dict:
    """Windows of seq_len + 1 tokens -> inputs and next-token targets (None = empty row)."""
    ids = torch.zeros(len(rows), seq_len, dtype=torch.long)
    targets = torch.full((len(rows), seq_len), IGNORE, dtype=torch.long)
    for b, row in enumerate(rows):
        if row is not None:
            t = torch.from_numpy(row)
            ids[b], targets[b] = t[:-1], t[1:]
    return {"input_ids": ids, "targets": targets}


def blank_infilling(text: np.ndarray, spans: list[tuple[int, int]], mask_id: int, sop_id: int, eop_id: int,
                    order: list[int] | None = None) -> dict[str, np.ndarray]:
    """One GLM example. ``spans`` = sorted, non-overlapping (start, length) in ``text``;
    ``order`` = the order Part B generates them in (default: left to right).

    Returns input_ids, targets, position_ids (1D, see the module docstring) and n_context
    (Part A length: the bidirectional prefix).
    """
    part_a, mask_pos, cursor = [], [], 0
    for start, length in spans:
        if start < cursor or length < 1 or start + length > len(text):
            raise ValueError(f"spans must be sorted, non-overlapping and inside the text: {spans}")
        part_a += list(text[cursor:start])
        mask_pos.append(len(part_a))
        part_a.append(mask_id)
        cursor = start + length
    part_a += list(text[cursor:])
    ids, targets, pos = list(part_a), [IGNORE] * len(part_a), list(range(len(part_a)))
    for k in order if order is not None else range(len(spans)):
        start, length = spans[k]
        span = list(text[start:start + length])
        ids += [sop_id] + span
        targets += span + [eop_id]
        pos += [mask_pos[k] + j for j in range(1, length + 2)]
    return {"input_ids": np.array(ids, dtype=np.int64), "targets": np.array(targets, dtype=np.int64),
            "position_ids": np.array(pos, dtype=np.int64), "n_context": len(part_a)}


@dataclass
class BlankInfilling:
    """Samples blank-infilling examples of exactly ``seq_len`` tokens from text windows."""

    seq_len: int
    mask_id: int
    gmask_id: int
    sop_id: int
    eop_id: int
    mask_ratio: float = 0.15  # fraction of the text cut out in [MASK] mode
    span_lambda: float = 3.0  # Poisson mean of [MASK] span lengths
    gmask_fraction: float = 0.5  # share of examples in [gMASK] (long suffix) mode
    seed: int = 0

    def example(self, window: np.ndarray, sample: int) -> dict[str, np.ndarray]:
        """An example from the first tokens of ``window``; random choices are seeded by the
        sample number, so an example never depends on what ran before it."""
        rng = np.random.default_rng([self.seed, sample])
        T = self.seq_len
        if rng.random() < self.gmask_fraction:
            m = T - 2  # Part A (m - S + 1) + Part B (S + 1) = T
            length = int(rng.integers((m + 1) // 2, m + 1))
            return blank_infilling(window[:m], [(m - length, length)], self.gmask_id, self.sop_id, self.eop_id)
        lengths: list[int] = []
        while sum(lengths) < self.mask_ratio * (T - 2 * len(lengths)):
            lengths.append(max(1, int(rng.poisson(self.span_lambda))))
        k, m = len(lengths), T - 2 * len(lengths)
        kept = m - sum(lengths)
        if kept + 1 < k:
            raise ValueError(f"seq_len {T} is too short for blank infilling with mask_ratio {self.mask_ratio}")
        # k distinct gaps among the kept tokens: spans never touch, each mask has text between
        slots = np.sort(rng.choice(kept + 1, size=k, replace=False))
        spans, shift = [], 0
        for slot, length in zip(slots, lengths):
            spans.append((int(slot) + shift, length))
            shift += length
        order = [int(i) for i in rng.permutation(k)]
        return blank_infilling(window[:m], spans, self.mask_id, self.sop_id, self.eop_id, order)

    def collate(self, rows: list[tuple[int, np.ndarray] | None]) -> dict:
        """(sample number, window) rows -> a batch with prefix-LM masks and 1D GLM positions."""
        B, T = len(rows), self.seq_len
        ids = torch.zeros(B, T, dtype=torch.long)
        targets = torch.full((B, T), IGNORE, dtype=torch.long)
        pos = torch.arange(T).repeat(B, 1)
        n_context = torch.zeros(B, dtype=torch.long)
        for b, row in enumerate(rows):
            if row is None:
                continue
            ex = self.example(row[1], row[0])
            ids[b], targets[b], pos[b] = (torch.from_numpy(ex[k]) for k in ("input_ids", "targets", "position_ids"))
            n_context[b] = ex["n_context"]
        return {"input_ids": ids, "targets": targets, "position_ids": pos,
                "attention_mask": prefix_lm_mask(n_context, T)}
