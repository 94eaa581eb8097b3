"""Trainer options: activation checkpointing, bf16/fp16 autocast, logs, refusing to mix runs."""

import math

import pytest

from openglm.train import TrainConfig, run_pretrain
from tests.train.conftest import DATA, read_log, tiny_config


def _run(out_dir, **kw):
    base = dict(train_data=[str(DATA / "corpus.txt")], eval_fraction=0.2, seq_len=32, micro_batch_size=4,
                max_steps=3, lr=3e-3)
    run_pretrain(tiny_config(TrainConfig, out_dir, **{**base, **kw}))
    return [r["loss"] for r in read_log(out_dir)]


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("plain"))


def test_activation_checkpointing_trains_identically(plain, tmp_path):
    assert _run(tmp_path, gradient_checkpointing=True) == pytest.approx(plain, abs=1e-6)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_precisions_train(plain, tmp_path, precision):
    got = _run(tmp_path, precision=precision)
    assert all(math.isfinite(x) for x in got)
    assert got[0] == pytest.approx(plain[0], abs=0.05)  # same model and batch, lower precision


def test_logs_jsonl_tensorboard_and_png(tmp_path):
    _run(tmp_path, tensorboard=True, eval_every=2, schedule="wsd")
    log = read_log(tmp_path)
    assert {"loss", "lr", "grad_norm", "tokens_per_s", "mfu", "tokens"} <= set(log[0])
    assert "eval_loss" in log[1] and log[0]["tokens"] == 4 * 32
    assert any((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert "max_steps: 3" in (tmp_path / "config.yaml").read_text()


def test_a_fresh_run_refuses_an_out_dir_with_checkpoints(tmp_path):
    _run(tmp_path)
    with pytest.raises(ValueError, match="--resume"):
        _run(tmp_path)


def test_mfu_counts_the_work_of_packed_rows_not_their_padding():
    import torch

    from openglm import GLMConfig
    from openglm.train.trainer import batch_flops

    cfg = GLMConfig.from_preset("nano", num_layers=2, hidden_size=64, num_heads=2, num_kv_heads=1, head_dim=32,
                                ffn_hidden_size=128, vocab_size=1000)
    body = 2 * (64 * (64 + 2 * 32) + 64 * 64 + 3 * 64 * 128)  # qkv, proj, gate_up + down
    head, attention = 1000 * 64, 12 * 2 * 64  # per output position; per (token, key) pair
    plain = {"input_ids": torch.zeros(2, 6, dtype=torch.long)}  # every position predicts the next
    assert batch_flops(cfg, plain) == (6 * (body + head) * 12 + attention * 2 * 36, 12)
    ignore = -100
    packed = {"input_ids": torch.zeros(2, 6, dtype=torch.long),
              "doc_ids": torch.tensor([[0, 0, 0, 1, 1, -1], [-1] * 6]),  # 3 + 2 tokens, the rest padding
              "targets": torch.tensor([[ignore, 5, ignore, ignore, 7, ignore], [ignore] * 6])}
    assert batch_flops(cfg, packed) == (6 * body * 5 + 6 * head * 2 + attention * (9 + 4), 5)
