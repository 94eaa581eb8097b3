"""The CLI and the configs: YAML + --set overrides, clear errors, shipped example configs run."""

import pytest
from typer.testing import CliRunner

from openglm.train.cli import app
from openglm.train.config import DPOConfig, SFTConfig, TrainConfig, parse_overrides
from tests.train.conftest import QUIET, REPO, TINY, read_log

SHRINK = [f"model_overrides.{k}={v}" for k, v in TINY.items()] + [f"{k}={v}" for k, v in QUIET.items()]


@pytest.mark.parametrize("name,cls", [("nano_pretrain", TrainConfig), ("nano_sft", SFTConfig), ("nano_dpo", DPOConfig)])
def test_shipped_configs_load(name, cls):
    cfg = cls.from_yaml(REPO / "configs" / f"{name}.yaml")
    assert cfg.STAGE == name.removeprefix("nano_")
    assert all((REPO / p).exists() for p in cfg.train_data)


def test_unknown_keys_and_bad_values_are_named():
    with pytest.raises(ValueError, match="unknown key 'learning_rate'.*valid keys:.*lr"):
        TrainConfig.from_dict({"learning_rate": 1})
    with pytest.raises(ValueError, match="unknown key 'rnk'"):
        SFTConfig.from_dict({"lora": {"rnk": 4}})
    with pytest.raises(ValueError, match="precision='fp8'"):
        TrainConfig(precision="fp8")
    raw = parse_overrides(["lr=1e-3", "lora.rank=4", "train_data=[a, b]"])
    assert raw == {"lr": "1e-3", "lora": {"rank": 4}, "train_data": ["a", "b"]}  # YAML: 1e-3 is a string
    cfg = SFTConfig.from_dict(raw)
    assert (cfg.lr, cfg.lora.rank, cfg.train_data) == (1e-3, 4, ["a", "b"])
    with pytest.raises(ValueError, match="lr='fast' is not a number"):
        TrainConfig.from_dict({"lr": "fast"})


@pytest.mark.parametrize("stage,extra", [
    ("sft", ["seq_len=256", "loss_weighting=token", "sorted_batching=true", "packing=false"]),
    ("pretrain", ["objective=blank", "seq_len=32", "eval_every=2"]),
    ("dpo", ["seq_len=128", "reference=model"]),
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
