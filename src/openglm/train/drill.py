"""Copy drill: a short warm start that gives a fresh model an in-context copy circuit.

Copying a name or a number from a question into a tool call needs an induction mechanism
(find the earlier occurrence of the current token, predict the token that followed it). A small
model finds it only after a long loss plateau: on repeated random spans the nano model stays at
chance for thousands of steps (docs/experiments.md, 2026-11-29). Written at one fixed length,
though, a repeat is learnt in ~150 steps, by a purely positional head ("attend L-1 tokens back")
that copies what it sees. The drill starts there and then widens the length range notch by
notch: each widening leaves only a few candidate offsets, so matching by content, the real
induction mechanism, is learnt from a head that already copies.

The range widens only when the drill is solved at the current one (accuracy >= `gate`), never by
the clock: when and whether the content mechanism forms varies with the seed. On a fixed
schedule, seed 0 formed it 150 steps into the widening, a seed-1 run never did in 600 steps
(loss 8.0); gated, seeds 0, 1 and 2 were solved at steps 575, 475 and 475 (docs/experiments.md,
"2026-11-29: a GPU screen finds the seed fragility").

Each row is random token ids made of blocks `h h`, `h` of n random ids, n drawn from
[shortest, span_max]; loss is taken inside each second copy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..model.glm import IGNORE
from .distributed import pick_precision


@dataclass
class DrillConfig:
    steps: int = 600  # at most; the drill stops as soon as it is solved at span_min
    span_min: int = 6
    span_max: int = 48  # the one length it starts at (the positional head forms here)
    gate: float = 0.9  # accuracy on a check's batch that solves the current range
    notch: int = 6  # how far the shortest length drops when it is solved
    check_every: int = 25
    batch_size: int = 32
    seq_len: int = 128
    lr: float = 1e-3
    seed: int = 0

    def next_shortest(self, shortest: int, accuracy: float) -> int:
        """The shortest block length after a check: a notch lower once the current range is solved."""
        return max(self.span_min, shortest - self.notch) if accuracy >= self.gate else shortest


def drill_batch(cfg: DrillConfig, shortest: int, low: int, high: int,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, targets) [batch, seq_len]: ids drawn from [low, high), blocks `h h` (n in [shortest,
    span_max]) from the start of each row; targets are the next id inside every second copy."""
    if cfg.seq_len < 2 * cfg.span_max:
        raise ValueError(f"seq_len {cfg.seq_len} cannot hold two copies of span_max {cfg.span_max}")
    ids = torch.randint(low, high, (cfg.batch_size, cfg.seq_len), generator=generator)
    targets = torch.full_like(ids, IGNORE)
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
    """Train `model` in place on the drill; returns a record per check, the last one saying
    whether the drill was solved (accuracy >= gate at span_min) within `cfg.steps`."""
    from rich.progress import Progress

    low, high = token_ids
    device = next(model.parameters()).device  # batches are drawn on the CPU (same rows everywhere), then moved
    g = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.0, fused=True)
    half = pick_precision("auto", device) == "bf16"  # fp32 where bf16 has no native kernels
    model.train()
    log, shortest = [], cfg.span_max
    with Progress(disable=not progress) as bar:
        task = bar.add_task("copy drill", total=cfg.steps)
        for step in range(1, cfg.steps + 1):
            ids, targets = (t.to(device) for t in drill_batch(cfg, shortest, low, high, g))
            for group in opt.param_groups:  # short linear warm-up, then constant
                group["lr"] = cfg.lr * min(1.0, step / 50)
            mask = targets != IGNORE
            check = step % cfg.check_every == 0 or step == cfg.steps
            with torch.autocast(device.type, torch.bfloat16, enabled=half):
                if check:  # logits of the target positions only, for the accuracy
                    logits = model(ids, logits_at=mask)
                    loss = F.cross_entropy(logits.float(), targets[mask])
                else:  # the fused head + loss: no [batch, seq, vocab] logits at all
                    loss = model(ids, targets=targets) / mask.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.update(task, advance=1, description=f"copy drill (loss {loss.item():.3f}, shortest {shortest})")
            if not check:
                continue
            acc = (logits.argmax(-1) == targets[mask]).float().mean().item()
            solved = shortest == cfg.span_min and acc >= cfg.gate
            log.append({"step": step, "loss": round(loss.item(), 4), "accuracy": round(acc, 4),
                        "shortest": shortest, "solved": solved})
            if solved:
                break
            shortest = cfg.next_shortest(shortest, acc)
    model.eval()
    return log
