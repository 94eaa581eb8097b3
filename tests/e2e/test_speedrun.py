"""The whole pipeline on the `tiny` budget: every stage runs, the result loads, a rerun resumes."""

import json

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
    for stage in ("data", "tokenizer", "pretrain", "sft", "dpo", "eval"):
        assert (run / stage / "DONE").exists(), stage
    report = (run / "report.md").read_text()
    assert "| **total** |" in report and "answer_with_tools" in report
    assert (run / "curves.png").stat().st_size > 10_000
    summary = json.loads((run / "eval" / "summary.json").read_text())
    assert summary["overall"]["tasks"] == PRESETS["tiny"].eval_tasks


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


def test_pretraining_text_keeps_every_passage_and_repeats_some(run):
    corpus = [p for p in (run / "data" / "corpus.txt").read_text().split("\n\n") if p.strip()]
    text = (run / "pretrain" / "corpus_repeats.txt").read_text()
    pieces = [p for p in text.split("\n\n") if p.strip()]

    def doubled(p):  # "X\nX"
        n = len(p) // 2
        return len(p) % 2 == 1 and p[:n] == p[n + 1:] and p[n] == "\n"

    repeats = [p for p in pieces if doubled(p)]
    assert len(pieces) == len(corpus) + len(repeats)
    assert 0.3 < len(repeats) / len(corpus) < 0.7  # PRESETS["tiny"].pretrain_repeat_fraction = 0.5
    assert all(p.strip() in text for p in corpus[:200])


def test_the_same_seed_gives_the_same_model(run, tmp_path):
    from safetensors.torch import load_file

    Speedrun(tmp_path, seed=0, budget=PRESETS["tiny"]).run()
    a, b = load_file(run / "final" / "model.safetensors"), load_file(tmp_path / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert (run / "eval" / "summary.json").read_text() == (tmp_path / "eval" / "summary.json").read_text()
