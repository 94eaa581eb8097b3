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
    assert r.exit_code != 0
    assert "does not exist" in str(r.exception)


def test_generate_streams_the_same_text_as_the_api(checkpoint):
    r = runner.invoke(app, ["generate", "--model", str(checkpoint), "-n", "12", "--raw", "Once upon a time"])
    assert r.exit_code == 0, r.output
    model, tok = openglm.load_model(checkpoint), openglm.load_tokenizer(checkpoint)
    want = openglm.generate(model, tok, "Once upon a time", 12)
    assert r.stdout == want + "\n"


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
    # the second turn saw the first: its reply equals generating from the two-turn history
    model, tok = openglm.load_model(checkpoint), openglm.load_tokenizer(checkpoint)
    first = openglm.generate(model, tok, [{"role": "user", "content": "hi there"}], 6)
    second = openglm.generate(model, tok, [{"role": "user", "content": "hi there"},
                                           {"role": "assistant", "content": first},
                                           {"role": "user", "content": "and again"}], 6)
    replies = [seg.split("\nuser> ")[0] for seg in p.stdout.split("assistant> ")[1:]]
    assert replies[:2] == [first, second]


def test_info_counts_the_9b_preset():
    r = runner.invoke(app, ["info", "--preset", "glm-4-9b-chat"])
    assert r.exit_code == 0
    assert "9,399,951,360" in r.stdout
