"""Shared pieces of the training tests: a tiny GLM and configs that run in seconds on 2 cores."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import openglm

REPO = Path(__file__).resolve().parents[2]
DATA = Path(openglm.__file__).parent / "assets" / "train_examples"  # shipped, so the example configs use it too
TINY = {"num_layers": 2, "hidden_size": 64, "num_heads": 2, "num_kv_heads": 1, "head_dim": 32,
        "ffn_hidden_size": 128}
QUIET = {"tensorboard": False, "progress": False, "peak_flops": 1e11}


def tiny_config(cls, out_dir, **overrides):
    """A stage config for the tiny model, writing into out_dir."""
    raw = {"model": "nano", "model_overrides": dict(TINY), "out_dir": str(out_dir), "seed": 7,
           "warmup_steps": 2, "save_every": 0, "eval_every": 0, **QUIET, **overrides}
    return cls.from_dict(raw)


def write_yaml(path, cfg) -> Path:
    import yaml

    raw = cfg.to_dict()
    raw.pop("stage")
    path.write_text(yaml.safe_dump(raw))
    return path


def read_log(out_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(out_dir) / "log.jsonl").read_text().splitlines()]


def cli(*args, nproc: int = 1, **popen) -> subprocess.Popen:
    """`openglm.train.cli ARGS` in a fresh process (under torchrun when nproc > 1)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)] if nproc > 1 \
        else [sys.executable]
    env = {**os.environ, "OMP_NUM_THREADS": "1" if nproc > 1 else "2"}
    return subprocess.Popen([*launcher, "-m", "openglm.train.cli", *map(str, args)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


@pytest.fixture(scope="session")
def tokenizer():
    from openglm.tokenizer import default_tokenizer

    return default_tokenizer()
