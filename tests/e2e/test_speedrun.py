"""The whole pipeline on the `tiny` budget: every stage runs, the result loads, a rerun resumes."""

import json
from pathlib import Path

import pytest

from openglm.chat import SPECIAL_TOKENS
from openglm.speedrun import PRESETS, Speedrun

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("speedrun")
    Speedrun(out, seed=0, budget=PRESETS["tiny"]).run()
    return out


def test_every_stage_finished_and_the_report_has_the_results(run):
    for stage in ("data", "tokenizer", "pretrain", "sft", "dpo", "rl", "eval"):
        assert (run / stage / "DONE").exists(), stage
    report = (run / "report.md").read_text()
    assert "| **total** |" in report and "answer_with_tools" in report
    assert (run / "curves.png").stat().st_size > 10_000
    summary = json.loads((run / "eval" / "summary.json").read_text())
    assert summary["overall"]["tasks"] == PRESETS["tiny"].eval_tasks
    copying = json.loads((run / "eval" / "induction.json").read_text())
    assert list(copying) == ["pretrain/drill", "pretrain", "sft/warmup", "sft", "dpo", "rl"]
    assert (run / "rl" / "rl.png").exists() and "| rl |" in report
    assert all(0 <= v["accuracy"] <= 1 and v["targets"] > 64 for v in copying.values())
    assert "## In-context copying (induction) after each stage" in report and "| sft/warmup |" in report


def test_the_final_checkpoint_loads_with_its_tokenizer(run):
    import openglm

    model, tok = openglm.load_model(run / "final"), openglm.load_tokenizer(run / "final")
    assert tok.vocab_size == model.config.vocab_size == PRESETS["tiny"].vocab_size
    assert tok.special_ids["<|user|>"] == PRESETS["tiny"].vocab_size - len(SPECIAL_TOKENS) + 7
    assert model.config.eos_token_ids == tok.stop_ids
    assert isinstance(openglm.generate(model, tok, [{"role": "user", "content": "你好"}], 5), str)


def test_a_rerun_resumes_instead_of_redoing(run):
    before = {s: (run / s / "DONE").read_text() for s in ("data", "sft", "eval")}
    Speedrun(run, seed=0, budget=PRESETS["tiny"]).run()
    assert {s: (run / s / "DONE").read_text() for s in before} == before


def test_sft_data_holds_agent_tasks_and_general_text(run):
    agent = (run / "sft" / "agent.jsonl").read_text().splitlines()
    text = (run / "sft" / "text.jsonl").read_text().splitlines()
    assert len(agent) == PRESETS["tiny"].sft_tasks and text
    assert json.loads(text[0])["messages"][0]["role"] == "user"


def test_pretraining_mixes_every_passage_with_instruction_chats_and_copy_rows(run):
    import numpy as np

    from openglm.tokenizer import load_tokenizer

    corpus = [p for p in (run / "data" / "corpus.txt").read_text().split("\n\n") if p.strip()]
    shard = run / "pretrain" / "tokens"
    meta = json.loads((shard / "index.json").read_text())
    assert meta["documents"] == len(corpus) and meta["chats"] == PRESETS["tiny"].pretrain_tasks
    ids = np.fromfile(shard / meta["shards"][0]["path"], dtype=np.uint32).tolist()
    assert len(ids) == meta["text_tokens"] + meta["chat_tokens"] + meta["copy_tokens"]
    assert abs(meta["copy_tokens"] / len(ids) - PRESETS["tiny"].pretrain_copy_fraction) < 0.01
    tok = load_tokenizer(run / "tokenizer")
    ends = [i for i, t in enumerate(ids) if t == tok.eos_id]
    assert ends[-1] == len(ids) - 1
    pieces = [ids[a + 1:b] for a, b in zip([-1, *ends], ends)]

    def copy_row(p):  # openglm.train.drill.copy_rows: 128 ids led by a block `h h`
        return len(p) == 128 and any(p[:n] == p[n:2 * n] for n in range(6, 49))

    copies = [p for p in pieces if copy_row(p)]
    docs = [tok.decode(p) for p in pieces if not copy_row(p)]
    assert len(copies) * 129 == meta["copy_tokens"]
    assert len(docs) == meta["documents"] + meta["chats"]
    chats = [d for d in docs if "<|assistant|>" in d]
    texts = [d for d in docs if "<|assistant|>" not in d]
    assert len(chats) == meta["chats"] and all(d.startswith("[gMASK]<sop><|user|>") for d in chats)

    def doubled(p):  # "X\nX"
        n = len(p) // 2
        return len(p) % 2 == 1 and p[:n] == p[n + 1:] and p[n] == "\n"

    repeats = [d for d in texts if "\n\n" in d and doubled(d.split("\n\n")[0])]
    assert 0.3 < len(repeats) / len(corpus) < 0.7  # PRESETS["tiny"].pretrain_repeat_fraction = 0.5
    passages = {d.split("\n\n", 1)[1] if d in repeats else d for d in texts}
    assert all(p.strip() in passages for p in corpus[:200])


def test_the_same_seed_gives_the_same_model(run, tmp_path):
    from safetensors.torch import load_file

    Speedrun(tmp_path, seed=0, budget=PRESETS["tiny"]).run()
    a, b = load_file(run / "final" / "model.safetensors"), load_file(tmp_path / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert (run / "eval" / "summary.json").read_text() == (tmp_path / "eval" / "summary.json").read_text()


def _sft_only(run: Path, out: Path, **budget) -> None:
    """The SFT stage alone with a changed tiny budget, on `run`'s data, tokenizer and base."""
    from dataclasses import replace

    for stage in ("data", "tokenizer", "pretrain"):
        (out / stage).symlink_to(run / stage)
    (out / "sft").mkdir()
    Speedrun(out, seed=0, budget=replace(PRESETS["tiny"], **budget)).stage_sft(out / "sft")


def test_sft_without_the_warm_up_starts_from_the_pre_trained_base(run, tmp_path):
    _sft_only(run, tmp_path, sft_warmup_steps=0)
    assert (tmp_path / "sft" / "final" / "model.safetensors").exists()
    assert not (tmp_path / "sft" / "warmup").exists()
    assert f"model: {tmp_path / 'pretrain' / 'final'}\n" in (tmp_path / "sft" / "config.yaml").read_text()


def test_sft_mixes_in_repeat_chats_and_uses_the_sft_learning_rate(run):
    short = [json.loads(line)["messages"] for line in (run / "sft" / "short.jsonl").read_text().splitlines()]
    repeats = [m for m in short if m[-1]["content"] in m[0]["content"]]  # the reply echoes the request
    assert 0 < len(repeats) < len(short)
    assert f"lr: {PRESETS['tiny'].sft_lr}\n" in (run / "sft" / "config.yaml").read_text()


def test_sft_holds_random_token_copies(run):
    from openglm.tokenizer import load_tokenizer

    chats = [json.loads(line)["messages"] for line in (run / "sft" / "copies.jsonl").read_text().splitlines()]
    assert len(chats) == int(PRESETS["tiny"].sft_tasks * PRESETS["tiny"].sft_random_copies)
    tok = load_tokenizer(run / "tokenizer")
    for user, reply in chats:
        assert user["content"] in ("Repeat exactly: " + reply["content"], "请原样重复：" + reply["content"])
        assert "\ufffd" not in reply["content"] and len(tok.encode(reply["content"])) >= 2
    assert len({reply["content"] for _, reply in chats}) == len(chats)


def test_sft_mix_weights_the_task_families(run, tmp_path):
    _sft_only(run, tmp_path, sft_warmup_steps=0, sft_steps=1, sft_mix={"arithmetic": 1.0})
    kinds = {json.loads(line)["kind"] for line in (tmp_path / "sft" / "agent.jsonl").read_text().splitlines()}
    assert kinds and all(k.startswith("arith-") for k in kinds)
