"""Reward models: the Bradley-Terry loss by hand, last-token pooling, a toy preference learned
through run_rm, exact resume, the saved folder, transformers export parity and `openglm score`."""

import json
import math
import random
import shutil

import pytest
import torch
from typer.testing import CliRunner

from openglm import GLM, GLMConfig
from openglm.chat import normalize_messages
from openglm.cli import app
from openglm.train import RMConfig, run_rm
from openglm.train.dpo import PreferencePairs, encode_pair
from openglm.train.reward_model import (
    BradleyTerryObjective,
    RewardModel,
    load_reward_model,
    read_reward_model,
    save_reward_model,
)
from openglm.train.sft import collate_rows, encode_conversation
from tests.train.conftest import DATA, TINY, read_log, tiny_config

RECORDS = [json.loads(line) for line in (DATA / "dpo_tiny.jsonl").read_text().splitlines()]
WORDS = "red blue green cat dog sun moon tree river stone bird fish cloud rain wind".split()


def _random_rm(seed: int = 0, **overrides) -> RewardModel:
    torch.manual_seed(seed)
    model = RewardModel(GLM(GLMConfig.from_preset("nano", **{**TINY, **overrides}))).eval()
    torch.nn.init.normal_(model.score.weight)  # a trained head is not zero
    return model


def _alone(model: RewardModel, ids) -> float:
    """The score of one unpadded row, from the hidden state at its last position."""
    with torch.no_grad():
        h = model.glm.hidden_states(torch.as_tensor(ids)[None])[0, -1]
        return (h @ model.score.weight[0]).item()


def test_bradley_terry_loss_equals_a_hand_computation(tokenizer):
    model = _random_rm()
    pairs = [encode_pair(tokenizer, r) for r in RECORDS[:3]]
    batch = PreferencePairs(pairs, torch.zeros(3, 2).numpy(), tokenizer.pad_id).collate([0, 1, 2, None])
    objective = BradleyTerryObjective()
    with torch.no_grad():
        loss_sum, metrics = objective(model, batch)
    assert objective.normalizer(batch).item() == 3  # the filler pair does not count
    rewards = [(_alone(model, c.ids), _alone(model, r.ids)) for c, r in pairs]
    assert len({round(c - r, 3) for c, r in rewards}) == 3  # distinct margins: a real test of the sum
    want = sum(math.log1p(math.exp(-(c - r))) for c, r in rewards)  # -log sigmoid(c - r)
    assert loss_sum.item() == pytest.approx(want, rel=1e-5)
    assert metrics["rewards/margin"].item() == pytest.approx(sum(c - r for c, r in rewards), rel=1e-5)
    assert metrics["rewards/chosen"].item() == pytest.approx(sum(c for c, _ in rewards), rel=1e-5)
    assert metrics["rewards/accuracy"].item() == sum(c > r for c, r in rewards)
    model.score.weight.data.zero_()  # fixed rewards: every score 0, so each pair costs log 2 and none is won
    with torch.no_grad():
        loss_sum, metrics = objective(model, batch)
    assert loss_sum.item() == pytest.approx(3 * math.log(2), abs=1e-12)
    assert metrics["rewards/margin"].item() == 0 and metrics["rewards/accuracy"].item() == 0


def test_pooling_reads_the_last_real_token_of_right_padded_rows(tokenizer):
    model = _random_rm(1)
    rows = [[5, 9, 200, 31, 7], [12, 40], [300, 301, 302]]
    T, pad = 7, tokenizer.pad_id
    ids = torch.tensor([r + [pad] * (T - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in rows])
    want = torch.tensor([_alone(model, r) for r in rows])
    with torch.no_grad():
        by_mask = model(ids, attention_mask=mask)
        by_docs = model(ids, doc_ids=mask.long() - 1 + mask.long())  # doc 0 for tokens, -1 for padding
        garbage = model(torch.where(mask.bool(), ids, 99), attention_mask=mask)  # what pads a row is not read
    for got in (by_mask, by_docs, garbage):
        assert torch.allclose(got, want, atol=1e-5), (got, want)
    assert by_mask.dtype == torch.float32 and by_mask.shape == (3,)


def _toy_pairs(n: int, seed: int) -> list[dict]:
    """Replies of random words; the chosen one says "thanks" where the rejected one has another
    word: same length, so only the word tells them apart."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = rng.choices(WORDS, k=rng.randint(3, 7))
        at = rng.randint(0, len(words))
        out.append({"messages": [{"role": "user", "content": " ".join(rng.choices(WORDS, k=3))}],
                    "chosen": " ".join(words[:at] + ["thanks"] + words[at:]),
                    "rejected": " ".join(words[:at] + [rng.choice(WORDS)] + words[at:])})
    return out


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A tiny reward model trained on the toy preference: 12 steps, checkpoints at 6 and 12."""
    root = tmp_path_factory.mktemp("rm")
    cfg = tiny_config(RMConfig, root / "run", train_data=[str(_write(root / "train.jsonl", _toy_pairs(192, 0)))],
                      eval_data=[str(_write(root / "held.jsonl", _toy_pairs(48, 1)))], seq_len=32,
                      micro_batch_size=16, max_steps=12, lr=3e-3, eval_every=12, eval_batches=3, save_every=6)
    run_rm(cfg)
    return cfg


def test_a_tiny_reward_model_learns_a_toy_preference(toy_run):
    log = read_log(toy_run.out_dir)
    assert log[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # the zero head: every score 0
    assert log[-1]["step"] == 12 and log[-1]["eval_rewards/accuracy"] >= 0.9
    assert log[-1]["eval_loss"] < 0.5 * math.log(2)


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(toy_run, tmp_path):
    out = tmp_path / "resumed"
    shutil.copytree(toy_run.out_dir, out)
    shutil.rmtree(out / "checkpoints" / "step_00000012")  # as if the run died after step 6's checkpoint
    shutil.rmtree(out / "final")
    cfg = RMConfig.from_dict({**toy_run.to_dict(), "out_dir": str(out), "resume": True})
    run_rm(cfg)
    want, got = read_reward_model(f"{toy_run.out_dir}/final"), read_reward_model(out / "final")
    assert want.score.weight.abs().sum() > 0
    for (name, a), b in zip(want.state_dict().items(), got.state_dict().values()):
        assert torch.equal(a, b), name
    for key in ("loss", "eval_loss", "eval_rewards/accuracy"):
        assert [r.get(key) for r in read_log(out)] == [r.get(key) for r in read_log(toy_run.out_dir)]


def test_saved_folder_round_trip_and_score_on_the_command_line(toy_run, tmp_path, tokenizer):
    final = f"{toy_run.out_dir}/final"
    model, tok = load_reward_model(final)
    assert tok.vocab_size == tokenizer.vocab_size
    save_reward_model(model, tmp_path / "again")
    again = read_reward_model(tmp_path / "again")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))

    pairs = _toy_pairs(6, 2)
    data = _write(tmp_path / "score.jsonl", [{"messages": pairs[0]["messages"] +
                                              [{"role": "assistant", "content": pairs[0]["chosen"]}]}, *pairs])
    r = CliRunner().invoke(app, ["score", final, str(data)])
    assert r.exit_code == 0, r.output
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["line"] for x in lines] == list(range(1, 8)) and set(lines[0]) == {"line", "score"}
    assert lines[0]["score"] == pytest.approx(lines[1]["chosen"], abs=1e-5)  # the same conversation
    conversations = [p["messages"] + [{"role": "assistant", "content": p[k]}] for p in pairs
                     for k in ("chosen", "rejected")]
    assert [s for x in lines[1:] for s in (x["chosen"], x["rejected"])] == \
        pytest.approx(model.score_conversations(tok, conversations), abs=1e-5)
    wins = sum(x["chosen"] > x["rejected"] for x in lines[1:])
    assert r.stderr == f"pair accuracy: {wins / 6:.4f} ({wins} of 6 pairs)\n"

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(pairs[0]) + "\n" + json.dumps({"chosen": "hi"}) + "\n")
    r = CliRunner().invoke(app, ["score", final, str(bad)])
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr.startswith(f"error: {bad}:2: ") and "missing 'messages'" in r.stderr
    assert r.stderr.count("\n") == 1
    bad.write_text(json.dumps(pairs[0]) + "\n{not json\n")
    r = CliRunner().invoke(app, ["score", final, str(bad)])
    assert r.exit_code == 1 and r.stderr.startswith(f"error: {bad}:2: ")


@pytest.mark.parametrize("sandwich", [False, True])
def test_export_scores_the_same_in_transformers(tmp_path, tokenizer, sandwich):
    from transformers import AutoModelForSequenceClassification

    model = _random_rm(2, sandwich_norm=sandwich, tie_embeddings=not sandwich)
    save_reward_model(model, tmp_path / "rm")
    tokenizer.save(tmp_path / "rm")
    r = CliRunner().invoke(app, ["convert", str(tmp_path / "rm"), str(tmp_path / "hf")])
    assert r.exit_code == 0, r.output
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    arch = "Glm4ForSequenceClassification" if sandwich else "GlmForSequenceClassification"
    assert (config["architectures"], config["num_labels"], config["pad_token_id"]) == ([arch], 1, tokenizer.pad_id)
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    assert type(hf).__name__ == arch

    conversations = [[{"role": "user", "content": "Is water wet?"}, {"role": "assistant", "content": c}]
                     for c in ("Yes, water makes things wet.", "No.", "It depends on what you call wet, really.")]
    rows = [[encode_conversation(tokenizer, normalize_messages(c))] for c in conversations]
    batch = collate_rows(rows, tokenizer.pad_id)  # right-padded with the pad id, as training pads
    ids, mask = batch["input_ids"], (batch["doc_ids"] >= 0).long()
    assert mask.sum(1).unique().numel() == 3  # three lengths: two rows are padded
    with torch.no_grad():
        want = torch.tensor(model.score_conversations(tokenizer, conversations))
        got = hf(input_ids=ids, attention_mask=mask).logits.squeeze(-1)
    assert torch.allclose(got, want, atol=1e-5, rtol=0), (got, want)

    r = CliRunner().invoke(app, ["convert", str(tmp_path / "rm"), str(tmp_path / "cg"), "--layout", "chatglm"])
    assert r.exit_code == 2 and "is a reward model" in r.stderr
