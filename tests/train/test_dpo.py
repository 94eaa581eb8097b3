"""DPO: the loss equals a hand computation; on a toy set the margin rises and chosen wins."""

import json
import math
from contextlib import nullcontext

import pytest
import torch

from openglm import GLM, GLMConfig, load_model
from openglm.train import DPOConfig, run_dpo
from openglm.train.data import StepBatches
from openglm.train.dpo import DPOObjective, PreferencePairs, encode_pair, sequence_logprobs
from tests.train.conftest import DATA, TINY, read_log, tiny_config

RECORDS = [json.loads(line) for line in (DATA / "dpo_tiny.jsonl").read_text().splitlines()]


def _logp_by_hand(model, ex) -> float:
    """Sum of log p(target) over the reply, one position at a time."""
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.from_numpy(ex.ids)[None])[0].double(), dim=-1)
    return sum(logprobs[i, int(t)].item() for i, t in enumerate(ex.targets) if t != -100)


def test_loss_and_rewards_equal_a_hand_computation(tokenizer):
    torch.manual_seed(0)
    model = GLM(GLMConfig.from_preset("nano", **TINY)).eval()
    pairs = [encode_pair(tokenizer, r) for r in RECORDS[:3]]
    refs = [[-41.5, -40.0], [-38.25, -45.0], [-50.0, -49.5]]
    data = PreferencePairs(pairs, torch.tensor(refs).numpy(), tokenizer.pad_id)
    batch = data.collate([0, 1, 2, None])  # a filler row must not count
    beta = 0.3
    obj = DPOObjective(beta)
    with torch.no_grad():
        loss_sum, metrics = obj(model, batch)
    n = obj.normalizer(batch).item()
    assert n == 3
    losses, margins, wins = [], [], 0
    for (chosen, rejected), (ref_c, ref_r) in zip(pairs, refs):
        rc = beta * (_logp_by_hand(model, chosen) - ref_c)
        rr = beta * (_logp_by_hand(model, rejected) - ref_r)
        losses.append(-math.log(1 / (1 + math.exp(-(rc - rr)))))
        margins.append(rc - rr)
        wins += rc > rr
    assert loss_sum.item() / n == pytest.approx(sum(losses) / 3, abs=1e-5)
    assert metrics["rewards/margin"].item() / n == pytest.approx(sum(margins) / 3, abs=1e-5)
    assert metrics["rewards/accuracy"].item() / n == pytest.approx(wins / 3)


def test_reply_targets_exclude_the_prompt(tokenizer):
    chosen, rejected = encode_pair(tokenizer, RECORDS[0])
    text = [tokenizer.decode(ex.targets[ex.targets != -100]) for ex in (chosen, rejected)]
    assert text == ["\n" + RECORDS[0]["chosen"]["content"] + "<|user|>",
                    "\n" + RECORDS[0]["rejected"]["content"] + "<|user|>"]


@pytest.mark.slow
def test_on_a_toy_set_the_margin_rises_and_the_policy_prefers_chosen(tmp_path, tokenizer):
    cfg = tiny_config(DPOConfig, tmp_path, train_data=[str(DATA / "dpo_tiny.jsonl")], eval_fraction=0.0,
                      seq_len=128, micro_batch_size=10, max_steps=25, lr=3e-3, beta=0.1)
    run_dpo(cfg)
    log = read_log(tmp_path)
    margins = [r["rewards/margin"] for r in log]
    assert margins[0] == pytest.approx(0.0, abs=1e-6)  # step 1 runs with the reference weights
    assert margins[-1] > 1.0 and margins[-1] > max(margins[:5])
    assert log[-1]["rewards/accuracy"] == 1.0
    assert log[-1]["loss"] < math.log(2) / 4

    torch.manual_seed(cfg.seed)  # the starting model, rebuilt as run_dpo built it
    start = GLM(GLMConfig.from_preset("nano", **TINY)).eval()
    final = load_model(tmp_path / "final").eval()
    for record in RECORDS:
        batch = PreferencePairs([encode_pair(tokenizer, record)], torch.zeros(1, 2).numpy(), 0).collate([0])
        with torch.no_grad():
            before, after = sequence_logprobs(start, batch), sequence_logprobs(final, batch)
        assert after[0] - after[1] > before[0] - before[1]  # every pair moved toward the chosen reply


def test_lora_policy_with_adapters_off_as_reference(tmp_path):
    cfg = tiny_config(DPOConfig, tmp_path, train_data=[str(DATA / "dpo_tiny.jsonl")], eval_fraction=0.2,
                      seq_len=128, micro_batch_size=4, max_steps=4, lr=1e-2, reference="model", eval_every=2,
                      lora={"rank": 4, "alpha": 8})
    run_dpo(cfg)
    log = read_log(tmp_path)
    assert log[0]["rewards/margin"] == pytest.approx(0.0, abs=1e-6)
    assert "eval_rewards/accuracy" in log[1]
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()


def test_reference_is_precomputed_for_exactly_the_pairs_the_run_reads(tokenizer):
    torch.manual_seed(0)
    model = GLM(GLMConfig.from_preset("nano", **TINY)).eval()
    full, _ = PreferencePairs.load([DATA / "dpo_tiny.jsonl"], tokenizer, 128)
    part, _ = PreferencePairs.load([DATA / "dpo_tiny.jsonl"], tokenizer, 128)
    full.precompute_reference(model, nullcontext, 4, "cpu")
    loader = StepBatches(part.plan(3, seed=1), part.collate, micro_batch=3)  # 10 pairs: epochs of 4 batches
    needed = loader.items(2)
    assert len(needed) == 6 and None not in needed
    assert part.precompute_reference(model, nullcontext, 4, "cpu", only=needed) == 6
    assert torch.allclose(torch.from_numpy(part.ref_logps[needed]), torch.from_numpy(full.ref_logps[needed]))
    objective = DPOObjective(0.1)
    for _ in range(2):
        (batch,) = loader.next()
        with torch.no_grad():
            objective(model, batch)  # every pair of the planned steps has its reference
    (batch,) = loader.next()  # a step past the plan: its pairs were never computed
    with pytest.raises(RuntimeError, match=r"pairs \[.*\] have no reference log-probs"):
        objective(model, batch)


def test_precomputed_reference_covers_the_held_out_pairs_evaluation_reads(tmp_path):
    cfg = tiny_config(DPOConfig, tmp_path, train_data=[str(DATA / "dpo_tiny.jsonl")], eval_fraction=0.3,
                      seq_len=128, micro_batch_size=2, max_steps=2, lr=1e-3, eval_every=1)
    run_dpo(cfg)
    log = read_log(tmp_path)
    assert all(math.isfinite(r["eval_loss"]) and math.isfinite(r["eval_rewards/margin"]) for r in log)  # no NaN refs
