"""The copy drill: its rows, its length schedule, and that a small model learns to copy from it."""

import pytest
import torch

from openglm import GLM, GLMConfig
from openglm.model.glm import IGNORE
from openglm.train.drill import DrillConfig, copy_drill, copy_rows, drill_batch


def test_blocks_repeat_and_targets_point_inside_second_copies():
    cfg = DrillConfig(batch_size=4, seq_len=64, span_min=4, span_max=12)
    ids, targets = drill_batch(cfg, 4, 100, 200, torch.Generator().manual_seed(0))
    assert ids.shape == targets.shape == (4, 64) and ids.min() >= 100 and ids.max() < 200
    for row in range(4):
        at = 0
        while (targets[row, at:] != IGNORE).any():
            first = int((targets[row, at:] != IGNORE).nonzero()[0]) + at  # start of a second copy
            n = first - at
            assert 4 <= n <= 12
            assert torch.equal(ids[row, at:first], ids[row, first:first + n])
            assert torch.equal(targets[row, first:first + n - 1], ids[row, first + 1:first + n])
            assert targets[row, first + n - 1] == IGNORE
            at = first + n


def test_the_range_widens_a_notch_only_when_solved():
    cfg = DrillConfig(span_min=6, span_max=48, gate=0.9, notch=6)
    assert cfg.next_shortest(48, 0.5) == 48 and cfg.next_shortest(48, 0.95) == 42
    assert cfg.next_shortest(9, 0.99) == 6 and cfg.next_shortest(6, 1.0) == 6
    ids, targets = drill_batch(DrillConfig(batch_size=2, seq_len=100, span_max=48), 48, 0, 50,
                               torch.Generator().manual_seed(1))
    assert ((targets != IGNORE).sum(1) == 47).all()  # one block of the full length per row


def test_the_drill_stops_when_solved_and_says_when_it_is_not():
    def run(gate: float) -> list[dict]:
        torch.manual_seed(0)
        cfg = DrillConfig(steps=30, span_min=4, span_max=12, notch=4, gate=gate, check_every=5, batch_size=2,
                          seq_len=32)
        return copy_drill(GLM(GLMConfig.from_depth(1, vocab_size=64)), cfg, (0, 50), progress=False)

    easy = run(gate=0.0)  # every check passes: a notch per check, then solved at span_min
    assert [(r["step"], r["shortest"], r["solved"]) for r in easy] == [(5, 12, False), (10, 8, False),
                                                                        (15, 4, True)]
    never = run(gate=1.01)  # no check can pass: the range stays put and the last record says unsolved
    assert [r["step"] for r in never] == [5, 10, 15, 20, 25, 30]
    assert {r["shortest"] for r in never} == {12} and not never[-1]["solved"]


def test_rows_too_short_for_two_copies_are_refused():
    with pytest.raises(ValueError, match="seq_len 40 cannot hold two copies of span_max 24"):
        drill_batch(DrillConfig(seq_len=40, span_max=24), 24, 0, 10, torch.Generator())


def test_a_small_model_learns_to_copy_at_a_fixed_length():
    torch.manual_seed(0)
    model = GLM(GLMConfig.from_depth(2, vocab_size=256))
    cfg = DrillConfig(steps=300, span_min=8, span_max=8, batch_size=16, seq_len=32, lr=3e-3)
    log = copy_drill(model, cfg, (0, 200), progress=False)
    assert log[0]["accuracy"] < 0.1
    assert log[-1]["solved"] and log[-1]["accuracy"] >= 0.9 and log[-1]["step"] < 300, log


def test_copy_rows_repeat_each_block_and_are_seeded():
    rows = copy_rows(2000, 10, 60, seed=5, row_len=64, span=(4, 12))
    assert sum(map(len, rows)) >= 2000 and all(len(r) == 64 for r in rows)
    assert all(10 <= i < 60 for r in rows for i in r)
    assert rows == copy_rows(2000, 10, 60, seed=5, row_len=64, span=(4, 12))
    assert rows != copy_rows(2000, 10, 60, seed=6, row_len=64, span=(4, 12))
    # Every row starts with a block `h h`, 4 to 12 ids long: the shortest n whose halves match.
    for r in rows:
        n = next(n for n in range(4, 13) if r[:n] == r[n:2 * n])
        assert n <= 12
    # Random ids repeat by chance about once in a row; blocks make far more pairs.
    repeats = sum(r[i] == r[j] for r in rows for i in range(64) for j in range(i + 4, min(64, i + 25)))
    assert repeats > 10 * len(rows)
