"""The `openglm` command line: convert, generate, chat and info on real (tiny) checkpoints."""

import json
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

import openglm
from openglm.cli import app
from openglm.tokenizer import default_tokenizer
from tests.conftest import make_hf

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny transformers-format GLM-4 checkpoint with the small default tokenizer."""
    d = tmp_path_factory.mktemp("ckpt")
    make_hf("glm", seed=11, vocab_size=16384, max_position_embeddings=256).save_pretrained(d)
    default_tokenizer().save(d)
    return d


def test_convert_round_trip_through_chatglm_layout(checkpoint, tmp_path):
    r = runner.invoke(app, ["convert", str(checkpoint), str(tmp_path / "cg"), "--layout", "chatglm"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "cg" / "config.json").read_text())["model_type"] == "chatglm"
    assert (tmp_path / "cg" / "tokenizer.model").exists()
    r = runner.invoke(app, ["convert", str(tmp_path / "cg"), str(tmp_path / "hf"), "--dtype", "bfloat16"])
    assert r.exit_code == 0, r.output
    a, b = openglm.load_model(checkpoint), openglm.load_model(tmp_path / "hf")
    assert b.embed.weight.dtype == torch.bfloat16
    ids = torch.arange(20)[None]
    with torch.no_grad():
        assert (a(ids) - b.float()(ids)).abs().max() < 0.05


def test_convert_reports_a_missing_directory(tmp_path):
    r = runner.invoke(app, ["convert", str(tmp_path / "nope"), str(tmp_path / "out")])
    assert r.exit_code == 1
    assert r.stderr == f"error: checkpoint directory {tmp_path / 'nope'} does not exist\n"


@pytest.mark.parametrize("flags", [[], ["--compile"]])
def test_generate_streams_the_same_text_as_the_api(checkpoint, flags):
    r = runner.invoke(app, ["generate", "--model", str(checkpoint), "-n", "12", "--raw", *flags, "Once upon a time"])
    assert r.exit_code == 0, r.output
    model, tok = openglm.load_model(checkpoint), openglm.load_tokenizer(checkpoint)
    want = openglm.generate(model, tok, "Once upon a time", 12)
    assert r.stdout == want + "\n"
    assert ("compiles on first use" in r.stderr) == bool(flags)


def test_generate_on_the_nano_preset_runs():
    r = runner.invoke(app, ["generate", "--preset", "nano", "-n", "4", "hello"])
    assert r.exit_code == 0, r.output
    assert "RANDOM weights" in r.stderr
    assert torch.is_grad_enabled()  # the command must not switch autograd off for its caller


def test_chat_keeps_history_and_handles_commands(checkpoint):
    script = "hi there\nand again\n/reset\n/system 你是助手\n你好\n/nonsense\n/exit\n"
    p = subprocess.run([sys.executable, "-m", "openglm.cli", "chat", "--model", str(checkpoint), "-n", "6"],
                       input=script, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("assistant> ") == 3
    assert "conversation cleared" in p.stderr and "unknown command '/nonsense'" in p.stderr
    # the second turn saw the first: its reply equals generating from the two-turn history. A reply
    # is shown and kept without the newline that ends its (empty) metadata line.
    model, tok = openglm.load_model(checkpoint), openglm.load_tokenizer(checkpoint)
    first = openglm.generate(model, tok, [{"role": "user", "content": "hi there"}], 6).lstrip("\n")
    second = openglm.generate(model, tok, [{"role": "user", "content": "hi there"},
                                           {"role": "assistant", "content": first},
                                           {"role": "user", "content": "and again"}], 6).lstrip("\n")
    replies = [seg.split("\nuser> ")[0] for seg in p.stdout.split("assistant> ")[1:]]
    assert replies[:2] == [first, second]


def test_info_counts_the_9b_preset():
    r = runner.invoke(app, ["info", "--preset", "glm-4-9b-chat"])
    assert r.exit_code == 0
    assert "9,399,951,360" in r.stdout


def _unboxed(output: str) -> str:
    """A CLI error's text without rich's box and line breaks."""
    return " ".join(output.replace("│", " ").split())


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "pretrain_step=700"], "no field 'pretrain_step'"),
    (["--set", "pretrain_steps=fast"], "'pretrain_steps' must be int, got 'fast'"),
    (["--set", "steps"], "is not key=value"),
    (["--budget", "huge"], "unknown speedrun budget 'huge'"),
])
def test_speedrun_refuses_a_bad_budget_before_any_stage(tmp_path, args, message):
    r = runner.invoke(app, ["speedrun", "--out", str(tmp_path / "run"), *args])
    assert r.exit_code == 2 and message in _unboxed(r.output), r.output
    assert not (tmp_path / "run" / "data").exists()


def test_speedrun_budget_overrides_and_a_resume_with_other_settings(tmp_path):
    from openglm.speedrun import PRESETS, Speedrun

    budget = PRESETS["nano"].with_overrides({"pretrain_steps": 700, "sft_lr": 2})  # an int where a float goes
    assert (budget.pretrain_steps, budget.sft_lr, budget.sft_steps) == (700, 2, PRESETS["nano"].sft_steps)
    Speedrun(tmp_path, seed=0, budget=budget).record_settings()
    Speedrun(tmp_path, seed=0, budget=budget).record_settings()  # the same settings resume
    with pytest.raises(ValueError, match=r"other settings \(pretrain_steps, sft_lr, seed\)"):
        Speedrun(tmp_path, seed=1, budget=PRESETS["nano"]).record_settings()
    r = runner.invoke(app, ["speedrun", "--out", str(tmp_path), "--set", "pretrain_steps=700"])  # sft_lr differs
    assert r.exit_code == 2 and "other settings (sft_lr)" in _unboxed(r.output), r.output
    assert not (tmp_path / "data").exists()
