"""DDP and FSDP2 on 2 CPU processes (gloo) match one process with the same global batch."""

import pytest

from openglm.train import TrainConfig, run_pretrain
from tests.train.conftest import DATA, cli, read_log, tiny_config, write_yaml

STEPS = 5


def _cfg(out_dir, **kw):
    base = dict(train_data=[str(DATA / "corpus.txt")], eval_fraction=0.0, seq_len=32, micro_batch_size=4,
                max_steps=STEPS, lr=3e-3)
    return tiny_config(TrainConfig, out_dir, **{**base, **kw})


def _losses(out_dir):
    return [r["loss"] for r in read_log(out_dir)]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    run_pretrain(_cfg(out))
    return _losses(out)


def test_gradient_accumulation_matches_one_big_batch(single, tmp_path):
    run_pretrain(_cfg(tmp_path, micro_batch_size=2, grad_accum=2))
    got = _losses(tmp_path)
    assert len(got) == STEPS
    assert max(abs(a - b) for a, b in zip(got, single)) < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_match_one(single, tmp_path, mode):
    config = write_yaml(tmp_path / "run.yaml", _cfg(tmp_path / "out", micro_batch_size=2, distributed=mode))
    proc = cli("pretrain", config, nproc=2)
    output = proc.communicate(timeout=240)[0]
    assert proc.returncode == 0, output
    got = _losses(tmp_path / "out")
    assert len(got) == STEPS
    assert single[-1] < single[0]  # training moved, so agreement is not trivial
    assert max(abs(a - b) for a, b in zip(got, single)) < 1e-5, (got, single)
