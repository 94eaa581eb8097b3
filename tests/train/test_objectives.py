"""Objectives: GLM blank infilling (hand-checked example, learning), causal batches, LR schedule."""

import numpy as np
import pytest
import torch

from openglm import GLM, GLMConfig
from openglm.train import TrainConfig, Trainer
from openglm.train.data import StepBatches, window_plan
from openglm.train.objectives import (
    IGNORE,
    BlankInfilling,
    LMObjective,
    blank_infilling,
    causal_collate,
    prefix_lm_mask,
    token_logprobs,
)
from openglm.train.trainer import lr_factor
from tests.train.conftest import QUIET, TINY

M, S, E = 90, 91, 92  # [MASK], <sop>, <eop> in the hand example


def test_blank_infilling_matches_the_glm_paper_figure():
    # GLM paper, Figure 2: x = x1..x6, spans [x3] and [x5 x6]; Part B generates x5 x6 first.
    x1, x2, x3, x4, x5, x6 = 11, 12, 13, 14, 15, 16
    ex = blank_infilling(np.array([x1, x2, x3, x4, x5, x6]), [(2, 1), (4, 2)], M, S, E, order=[1, 0])
    assert ex["input_ids"].tolist() == [x1, x2, M, x4, M, S, x5, x6, S, x3]
    assert ex["targets"].tolist() == [IGNORE] * 5 + [x5, x6, E, x3, E]
    # GLM's 2D positions: position 1 = (1 2 3 4 5 | 5 5 5 3 3), position 2 = (0 0 0 0 0 | 1 2 3 1 2);
    # collapsed to 1D as their sum, counted from 0.
    pos1 = [1, 2, 3, 4, 5, 5, 5, 5, 3, 3]
    pos2 = [0, 0, 0, 0, 0, 1, 2, 3, 1, 2]
    assert ex["position_ids"].tolist() == [a + b - 1 for a, b in zip(pos1, pos2)]
    assert ex["n_context"] == 5
    # Figure 2(d): Part A attends to all of Part A; Part B to Part A and, causally, Part B.
    want = torch.tensor([
        [1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(prefix_lm_mask(torch.tensor([5]), 10)[0, 0], want)


def test_sampled_examples_fill_seq_len_and_cover_the_text():
    bi = BlankInfilling(48, mask_id=M, gmask_id=93, sop_id=S, eop_id=E, seed=3)
    window = np.arange(1000, 1049)
    modes = set()
    for sample in range(40):
        ex = bi.example(window, sample)
        ids, t = ex["input_ids"], ex["targets"]
        assert len(ids) == len(t) == len(ex["position_ids"]) == 48
        gmask = 93 in ids
        modes.add(gmask)
        n_spans = int((ids == S).sum())
        assert n_spans == (1 if gmask else int((ids == M).sum()))
        text = [i for i in ids[:ex["n_context"]] if i >= 1000] + [i for i in t if i >= 1000]
        assert sorted(text) == list(range(1000, 1000 + 48 - 2 * n_spans))  # every text token, once
        if gmask:  # the suffix is cut out: Part A is text then [gMASK]
            assert ids[ex["n_context"] - 1] == 93
    assert modes == {True, False}
    assert bi.example(window, 5)["input_ids"].tolist() == bi.example(window, 5)["input_ids"].tolist()


def test_causal_batches_shift_targets_and_blank_filler_rows():
    b = causal_collate([np.arange(5), None], seq_len=4)
    assert b["input_ids"][0].tolist() == [0, 1, 2, 3] and b["targets"][0].tolist() == [1, 2, 3, 4]
    assert (b["targets"][1] == IGNORE).all()


def _toy_corpus(rng, runs):
    """Counting runs mod 40 (ids 100..139) with random starts: a blank is fixed by its context."""
    out = []
    for _ in range(runs):
        start, length = rng.integers(0, 40), rng.integers(20, 60)
        out += [100 + (start + j) % 40 for j in range(length)]
    return np.array(out)


@pytest.mark.slow
def test_a_tiny_model_learns_to_fill_blanks(tmp_path):
    rng = np.random.default_rng(0)
    train_text, eval_text = _toy_corpus(rng, 1500), _toy_corpus(rng, 60)
    T = 32
    bi = BlankInfilling(T, mask_id=150, gmask_id=151, sop_id=152, eop_id=153, seed=1, gmask_fraction=0.0)
    windows = (len(train_text) - 1) // T
    collate = lambda items: bi.collate([(s, train_text[w * T:w * T + T + 1]) if (s, w) != (None, None) else None  # noqa: E731
                                        for s, w in (i or (None, None) for i in items)])
    cfg = TrainConfig.from_dict(dict(max_steps=400, lr=3e-3, warmup_steps=10, weight_decay=0.0, seq_len=T,
                                     micro_batch_size=16, out_dir=str(tmp_path), save_every=0, eval_every=0, **QUIET))
    torch.manual_seed(0)
    model = GLM(GLMConfig.from_preset("nano", **{**TINY, "vocab_size": 160}))
    Trainer(cfg, model, LMObjective(), StepBatches(window_plan(range(windows), 16, 0), collate, 16)).fit()

    held = [(10_000 + i, eval_text[i * T:i * T + T + 1]) for i in range(40)]
    batch = bi.collate(held)
    with torch.no_grad():
        pred = model.eval()(batch["input_ids"], attention_mask=batch["attention_mask"],
                            position_ids=batch["position_ids"]).argmax(-1)
    t = batch["targets"]
    span = (t != IGNORE) & (t != 153)
    accuracy = (pred[span] == t[span]).float().mean().item()
    assert accuracy > 0.85, f"span tokens filled correctly: {accuracy:.2f} (chance 1/160)"


@pytest.mark.parametrize("schedule,step,want", [
    ("cosine", 0, 0.25), ("cosine", 3, 1.0), ("cosine", 4, 1.0),
    ("cosine", 99, 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * 95 / 96))),
    ("wsd", 50, 1.0), ("wsd", 79, 1.0), ("wsd", 80, 1 - 0.9 / 20), ("wsd", 99, 0.1), ("constant", 70, 1.0),
])
def test_lr_schedule(schedule, step, want):
    cfg = TrainConfig(max_steps=100, warmup_steps=4, schedule=schedule, min_lr_ratio=0.1, decay_fraction=0.2)
    assert lr_factor(step, cfg) == pytest.approx(want)


def test_token_logprobs_skip_positions_without_targets_but_equal_the_full_head():
    """Logits only where there is a target (SFT's speed-up) give the same values and gradients."""
    torch.manual_seed(0)
    model = GLM(GLMConfig.from_preset("nano", **TINY, vocab_size=301))
    ids = torch.randint(0, 301, (2, 12))
    targets = torch.randint(0, 301, (2, 12))
    targets[0, :7] = IGNORE
    targets[1, 3:5] = IGNORE
    batch = {"input_ids": ids, "targets": targets}

    got = token_logprobs(model, batch)
    got.sum().backward()
    grad = model.lm_head.weight.grad.clone()
    model.zero_grad()

    full = torch.log_softmax(model(ids), -1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    want = full.masked_fill(targets == IGNORE, 0.0)
    want.sum().backward()
    assert (got[targets == IGNORE] == 0).all()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad, model.lm_head.weight.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("autocast", [False, True])
def test_fused_head_loss_equals_logits_then_cross_entropy(autocast):
    """GLM.forward(targets=...) (chunked head + loss, gradients made in the forward pass) gives
    the plain path's weighted loss sum and gradients, fp32 and under bf16 autocast."""
    from openglm.model.head_loss import head_cross_entropy

    torch.manual_seed(0)
    model = GLM(GLMConfig.from_preset("nano", **TINY, vocab_size=301))
    ids = torch.randint(0, 301, (3, 16))
    targets = torch.randint(0, 301, (3, 16))
    targets[0, :9] = IGNORE
    weights = torch.rand(3, 16)

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    ctx = torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast)
    with ctx:
        logits = model(ids)
    nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
    want = (nll * weights.flatten()).sum()
    want_grads = grads(want)
    with ctx:
        got = model(ids, targets=targets, loss_weights=weights)
    got_grads = grads(got)
    tol = {"atol": 3e-2, "rtol": 2e-2} if autocast else {"atol": 1e-5, "rtol": 1e-5}
    torch.testing.assert_close(got, want, **tol)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, **tol)
    # chunking does not change the result, and without grad it only computes the loss
    h, w = torch.randn(10, 8), torch.randn(50, 8)
    t = torch.randint(0, 50, (10,))
    with torch.no_grad():
        torch.testing.assert_close(head_cross_entropy(h, w, t, chunk=3), head_cross_entropy(h, w, t, chunk=64))
