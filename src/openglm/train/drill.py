"""Copy drill: a short warm start that gives a fresh model an in-context copy circuit.

Copying a name or a number from a question into a tool call needs an induction mechanism
(find the earlier occurrence of the current token, predict the token that followed it). A small
model finds it only after a long loss plateau: on repeated random spans the nano model stays at
chance for thousands of steps (BENCHMARKS.md, sessions 12-13). Written at one fixed length,
though, a repeat is learnt in ~150 steps, by a purely positional head ("attend L-1 tokens back")
that copies what it sees. The drill starts there and then widens the length range step by
step: each widening leaves only a few candidate offsets, so matching by content, the real
induction mechanism, is learnt from a head that already copies.

Each row is random token ids made of blocks `h h`, `h` of n random ids, n drawn from
[lo(step), span_max]; loss is taken inside each second copy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..model.glm import IGNORE


@dataclass
class DrillConfig:
    steps: int = 600
    hold: int = 150  # steps at the one length span_max (the positional head forms here)
    widen: int = 300  # steps over which the shortest length falls from span_max to span_min
    span_min: int = 6
    span_max: int = 48
    batch_size: int = 32
    seq_len: int = 128
    lr: float = 1e-3
    seed: int = 0

    @classmethod
    def for_steps(cls, steps: int, seed: int = 0) -> DrillConfig:
        """The measured schedule (hold 150, widen 300, 600 steps), shrunk for shorter runs."""
        hold = min(cls.hold, steps // 4)
        return cls(steps=steps, hold=hold, widen=2 * hold, seed=seed)

    def shortest(self, step: int) -> int:
        """The shortest block length allowed at `step` (1-based)."""
        done = min(1.0, max(0, step - self.hold) / max(1, self.widen))
        return max(self.span_min, round(self.span_max - (self.span_max - self.span_min) * done))


def drill_batch(cfg: DrillConfig, step: int, low: int, high: int,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, targets) [batch, seq_len]: ids drawn from [low, high), blocks `h h` from the start
    of each row; targets are the next id inside every second copy, IGNORE elsewhere."""
    if cfg.seq_len < 2 * cfg.span_max:
        raise ValueError(f"seq_len {cfg.seq_len} cannot hold two copies of span_max {cfg.span_max}")
    ids = torch.randint(low, high, (cfg.batch_size, cfg.seq_len), generator=generator)
    targets = torch.full_like(ids, IGNORE)
    shortest = cfg.shortest(step)
    for row in range(cfg.batch_size):
        for at, n in _blocks(cfg.seq_len, shortest, cfg.span_max,
                             lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=generator))):
            ids[row, at + n:at + 2 * n] = ids[row, at:at + n]
            targets[row, at + n:at + 2 * n - 1] = ids[row, at + n + 1:at + 2 * n]
    return ids, targets


def _blocks(seq_len: int, shortest: int, longest: int, draw) -> list[tuple[int, int]]:
    """(start, n) of the `h h` blocks filling a row from its start; draw(lo, hi) is inclusive."""
    blocks, at = [], 0
    while True:
        n = draw(shortest, longest)
        if at + 2 * n > seq_len:
            return blocks
        blocks.append((at, n))
        at += 2 * n


def copy_rows(n_tokens: int, low: int, high: int, seed: int, row_len: int = 128,
              span: tuple[int, int] = (6, 48)) -> list[list[int]]:
    """Drill rows as plain token lists (about `n_tokens` in all), to mix into a pre-training shard.

    Trained there with the ordinary causal loss: the first copy of each block is noise, the second
    is predictable only by copying. Keeps the drilled copy circuit in use while the model learns
    text (without them, the copy probe fell from 99% to 28% in 200 pre-training steps).
    """
    rng = np.random.default_rng(seed)
    rows, made = [], 0
    while made < n_tokens:
        row = rng.integers(low, high, row_len)
        for at, n in _blocks(row_len, *span, lambda lo, hi: int(rng.integers(lo, hi + 1))):
            row[at + n:at + 2 * n] = row[at:at + n]
        rows.append(row.tolist())
        made += row_len
    return rows


def copy_drill(model, cfg: DrillConfig, token_ids: tuple[int, int], progress: bool = True) -> list[dict]:
    """Train `model` in place on the drill; returns a log record every 25 steps."""
    from rich.progress import Progress

    low, high = token_ids
    g = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.0)
    model.train()
    log = []
    with Progress(disable=not progress) as bar:
        task = bar.add_task("copy drill", total=cfg.steps)
        for step in range(1, cfg.steps + 1):
            ids, targets = drill_batch(cfg, step, low, high, g)
            for group in opt.param_groups:  # short linear warm-up, then constant
                group["lr"] = cfg.lr * min(1.0, step / 50)
            with torch.autocast("cpu", torch.bfloat16):
                logits = model(ids)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % 25 == 0 or step == cfg.steps:
                mask = targets != IGNORE
                acc = (logits[mask].argmax(-1) == targets[mask]).float().mean().item()
                log.append({"step": step, "loss": round(loss.item(), 4), "accuracy": round(acc, 4),
                            "shortest": cfg.shortest(step)})
            bar.update(task, advance=1, description=f"copy drill (loss {loss.item():.3f})")
    model.eval()
    return log
