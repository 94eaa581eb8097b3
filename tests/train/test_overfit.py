"""Learning actually happens: the `nano` preset memorises a few pages of real text."""

import math

import pytest

from openglm.train import TrainConfig, run_pretrain
from tests.train.conftest import DATA, QUIET, read_log


@pytest.mark.slow
def test_nano_overfits_a_small_real_text(tmp_path):
    cfg = TrainConfig.from_dict(dict(
        model="nano", train_data=[str(DATA / "corpus.txt")], eval_fraction=0.0, seq_len=64, micro_batch_size=8,
        max_steps=160, lr=3e-3, warmup_steps=10, schedule="constant", weight_decay=0.0, out_dir=str(tmp_path),
        save_every=0, seed=0, **QUIET))
    result = run_pretrain(cfg)
    log = read_log(tmp_path)
    assert log[0]["loss"] == pytest.approx(math.log(16384), abs=0.3)  # random guessing over the vocab
    assert result["loss"] < 1.0, f"final loss {result['loss']:.3f}"
    assert max(r["loss"] for r in log[-10:]) < 1.5
