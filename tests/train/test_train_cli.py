"""The CLI and the configs: YAML + --set overrides, clear errors, shipped example configs run."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from openglm.train.cli import app
from openglm.train.config import DPOConfig, RMConfig, SFTConfig, TrainConfig, parse_overrides
from tests.train.conftest import DATA, QUIET, REPO, TINY, read_log

SHRINK = [f"model_overrides.{k}={v}" for k, v in TINY.items()] + [f"{k}={v}" for k, v in QUIET.items()]


@pytest.mark.parametrize("name,cls", [("nano_pretrain", TrainConfig), ("nano_sft", SFTConfig), ("nano_dpo", DPOConfig),
                                      ("nano_rm", RMConfig)])
def test_shipped_configs_load(name, cls):
    cfg = cls.from_yaml(REPO / "configs" / f"{name}.yaml")
    assert cfg.STAGE == name.removeprefix("nano_")
    # the data ships inside the package, so the configs work for a pip-installed openglm too
    assert cfg.train_data and all(Path(p).is_absolute() and Path(p).is_relative_to(DATA) for p in cfg.train_data)
    assert all(Path(p).exists() for p in cfg.train_data)
    assert Path(cfg.out_dir) == REPO / "runs" / name  # relative to the config file, not the working directory


def test_unknown_keys_and_bad_values_are_named():
    with pytest.raises(ValueError, match="unknown key 'learning_rate'; valid keys for TrainConfig:.*lr"):
        TrainConfig.from_dict({"learning_rate": 1})
    with pytest.raises(ValueError, match=r"unknown key 'lora.rnk' \(did you mean 'lora.rank'\?\)"):
        SFTConfig.from_dict({"lora": {"rnk": 4}})
    with pytest.raises(ValueError, match="precision='fp8'"):
        TrainConfig(precision="fp8")
    raw = parse_overrides(["lr=1e-3", "lora.rank=4", "train_data=[a, b]"])
    assert raw == {"lr": "1e-3", "lora": {"rank": 4}, "train_data": ["a", "b"]}  # YAML: 1e-3 is a string
    cfg = SFTConfig.from_dict(raw)
    assert (cfg.lr, cfg.lora.rank, cfg.train_data) == (1e-3, 4, ["a", "b"])
    with pytest.raises(ValueError, match="^lr: expected a number, got 'fast'$"):
        TrainConfig.from_dict({"lr": "fast"})


@pytest.mark.parametrize("pair,message", [
    ("max_steps=abc", "max_steps: expected an integer, got 'abc'"),
    ("max_steps=2.5", "max_steps: expected an integer, got 2.5"),
    ("max_steps=true", "max_steps: expected an integer, got True"),
    ("tensorboard=maybe", "tensorboard: expected true or false, got 'maybe'"),
    ("betas=[0.9]", "betas: expected a list of 2 numbers, got [0.9]"),
    ("train_data={a: 1}", "train_data: expected a list of strings, got {'a': 1}"),
    ("peak_flops=fast", "peak_flops: expected a number or null, got 'fast'"),
    ("lora.rank=big", "lora.rank: expected an integer, got 'big'"),
    ("lora=4", "lora: expected a mapping, true or null, got 4"),
    ("max_step=3", "unknown key 'max_step' (did you mean 'max_steps'?)"),
])
def test_overrides_are_typed_and_errors_name_field_and_type(pair, message):
    with pytest.raises(ValueError) as e:
        SFTConfig.from_yaml(REPO / "configs" / "nano_sft.yaml", parse_overrides([pair]))
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_values_are_coerced_and_direct_construction_is_checked_too():
    cfg = TrainConfig.from_dict({"lr": "3e-4", "peak_flops": "1e11", "betas": [0.8, 0.9], "train_data": "a.txt",
                                 "lora": True})
    assert (cfg.lr, cfg.peak_flops, cfg.betas, cfg.train_data, cfg.lora.rank) == (3e-4, 1e11, (0.8, 0.9), ["a.txt"], 8)
    with pytest.raises(ValueError, match="^max_steps: expected an integer, got 'abc'$"):
        TrainConfig(max_steps="abc")


def test_a_bad_value_in_the_file_names_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("max_steps: abc\n")
    with pytest.raises(ValueError, match=f"^{path}: max_steps: expected an integer, got 'abc'$"):
        TrainConfig.from_yaml(path)
    path.write_text("max_steps: [1\n")
    with pytest.raises(ValueError, match=f"^{path}: not valid YAML at line 2"):
        TrainConfig.from_yaml(path)


def test_paths_in_a_config_are_relative_to_its_folder(tmp_path, monkeypatch):
    folder = tmp_path / "project" / "configs"
    folder.mkdir(parents=True)
    shutil.copy(DATA / "sft_tiny.jsonl", folder / "chats.jsonl")
    (folder / "sft.yaml").write_text("train_data: [chats.jsonl, /abs/other.jsonl, openglm:assets/train_examples/x]\n"
                                     "eval_data: ../held.jsonl\ntokenizer: tok\nmodel: ../runs/pre/final\n"
                                     "out_dir: ../runs/sft\n")
    monkeypatch.chdir(tmp_path)  # anywhere else
    cfg = SFTConfig.from_yaml("project/configs/sft.yaml", {"eval_data": ["mine.jsonl"], "tokenizer": "default"})
    assert cfg.train_data == [str(folder / "chats.jsonl"), "/abs/other.jsonl", str(DATA / "x")]
    assert cfg.eval_data == ["mine.jsonl"]  # an override is relative to the working directory
    assert (cfg.tokenizer, cfg.model, cfg.out_dir) == ("default", str(tmp_path / "project/runs/pre/final"),
                                                      str(tmp_path / "project/runs/sft"))
    # names stay names: the default tokenizer and a model preset
    (folder / "sft.yaml").write_text("model: micro\ntokenizer: default\n")
    assert (SFTConfig.from_yaml(folder / "sft.yaml").model, SFTConfig.from_yaml(folder / "sft.yaml").tokenizer) == \
        ("micro", "default")


def test_the_example_config_runs_from_another_directory(tmp_path):
    """`openglm pretrain /path/to/configs/nano_pretrain.yaml` from outside the checkout."""
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    args = [sys.executable, "-m", "openglm.cli", "pretrain", str(REPO / "configs" / "nano_pretrain.yaml"),
            "--set", "max_steps=2", "--set", "out_dir=out", "--set", "eval_every=0"]
    for item in SHRINK:
        args += ["--set", item]
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [r["step"] for r in read_log(tmp_path / "out")] == [1, 2]
    assert (tmp_path / "out" / "final" / "config.json").exists()


@pytest.mark.parametrize("stage,extra", [
    ("sft", ["seq_len=256", "loss_weighting=token", "sorted_batching=true", "packing=false"]),
    ("pretrain", ["objective=blank", "seq_len=32", "eval_every=2"]),
    ("dpo", ["seq_len=128", "reference=model"]),
    ("rm", ["seq_len=128", "eval_every=2"]),
])
def test_each_stage_runs_from_its_example_config(tmp_path, stage, extra):
    args = [stage, str(REPO / "configs" / f"nano_{stage}.yaml"), "-o", str(tmp_path), "--max-steps", "2"]
    for item in SHRINK + extra + ["lora=null"] * (stage == "dpo"):
        args += ["--set", item]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "final: loss" in result.output
    assert [r["step"] for r in read_log(tmp_path)] == [1, 2]
    assert (tmp_path / "final" / "config.json").exists()


def test_cli_reports_a_bad_key_without_a_traceback(tmp_path):
    result = CliRunner().invoke(app, ["sft", str(REPO / "configs" / "nano_sft.yaml"), "--set", "btach=3"])
    assert result.exit_code != 0
    assert "unknown key 'btach'" in result.output


def test_cli_reports_a_mistyped_value_by_field_and_type(tmp_path):
    result = CliRunner().invoke(app, ["pretrain", str(REPO / "configs" / "nano_pretrain.yaml"), "-o", str(tmp_path),
                                      "--set", "max_steps=abc"])
    assert result.exit_code == 2
    assert "max_steps: expected an integer, got 'abc'" in " ".join(result.output.replace("│", " ").split())
    assert "Traceback" not in result.output
