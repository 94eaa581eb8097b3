"""In-context copying probe: does a model continue a span it has already seen in its context?

Each row is random tokens with one span written twice. Scored are the predictions inside the
second copy after its first token: the only way to get them right is an induction mechanism
(find the earlier occurrence of the current token, predict the token that followed it), so
chance is 1 / number of token types. Copying a name into a tool call needs exactly this, and a
small model reaches it only after a long plateau (Olsson et al., 2022, "In-context learning and
induction heads"; for the nano agent: docs/experiments.md, 2026-11-29).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

IGNORE = -100


@dataclass
class InductionScore:
    accuracy: float  # next-token accuracy inside the repeated span (after its first token)
    loss: float  # mean cross entropy on those tokens, nats
    chance_loss: float  # ln(token types): the loss of a model that has no copy mechanism
    targets: int

    def to_dict(self) -> dict:
        return asdict(self)


def induction_batch(rows: int, seq_len: int, low: int, high: int, seed: int = 0,
                    span: tuple[int, int] = (4, 16)) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, targets) [rows, seq_len]: random ids in [low, high), a span of random length at a
    random place copied once later at a random gap; targets hold the next token inside the copy
    (from its first token on) and IGNORE elsewhere."""
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    if seq_len < 2 * span[1] + 2:
        raise ValueError(f"seq_len {seq_len} is too short for two copies of a span of up to {span[1]} tokens")
    if high - low < 2:
        raise ValueError(f"need at least two token ids to draw from, got [{low}, {high})")
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(low, high, (rows, seq_len), generator=g)
    targets = torch.full_like(ids, IGNORE)

    def draw(lo: int, hi: int) -> int:  # inclusive
        return int(torch.randint(lo, hi + 1, (1,), generator=g))

    for r in range(rows):
        n = draw(*span)
        first = draw(0, seq_len - 2 * n - 1)
        second = draw(first + n + 1, seq_len - n)
        ids[r, second:second + n] = ids[r, first:first + n]
        targets[r, second:second + n - 1] = ids[r, second + 1:second + n]
    return ids, targets


def token_range(config) -> tuple[int, int]:
    """Ordinary token ids of a GLM config: everything below its first special id."""
    specials = [i for i in [config.pad_token_id, *(config.eos_token_ids or [])] if i is not None]
    return 0, min([config.vocab_size, *specials])


@torch.no_grad()
def induction_score(model, rows: int = 64, seq_len: int = 128, seed: int = 0,
                    token_ids: tuple[int, int] | None = None, batch_size: int = 16) -> InductionScore:
    """Score `model` (ids [B, T] -> logits [B, T, V]) on `rows` fresh random rows."""
    low, high = token_ids or token_range(model.config)
    ids, targets = induction_batch(rows, seq_len, low, high, seed)
    correct, loss_sum = 0, 0.0
    for start in range(0, rows, batch_size):
        x, y = ids[start:start + batch_size], targets[start:start + batch_size]
        logits = model(x).float()
        mask = y != IGNORE
        correct += int((logits[mask].argmax(-1) == y[mask]).sum())
        loss_sum += float(F.cross_entropy(logits[mask], y[mask], reduction="sum"))
    n = int((targets != IGNORE).sum())
    return InductionScore(accuracy=correct / n, loss=loss_sum / n, chance_loss=math.log(high - low), targets=n)
