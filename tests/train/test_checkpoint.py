"""Checkpoints: exact resume after SIGKILL, atomic writes, keep-last-N, export with openglm convert."""

import os
import signal
import time

import pytest
import torch

import openglm
from openglm.train import TrainConfig, run_pretrain
from openglm.train import checkpoint as ckpt
from tests.train.conftest import DATA, cli, read_log, tiny_config, write_yaml

STEPS = 12


def _cfg(out_dir, **kw):
    base = dict(train_data=[str(DATA / "corpus.txt")], eval_fraction=0.0, seq_len=32, micro_batch_size=4,
                max_steps=STEPS, lr=3e-3, save_every=3, keep_last=2)
    return tiny_config(TrainConfig, out_dir, **{**base, **kw})


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_same_loss_at_every_later_step(tmp_path):
    torch.set_num_threads(2)
    run_pretrain(_cfg(tmp_path / "straight"))
    want = {r["step"]: r["loss"] for r in read_log(tmp_path / "straight")}

    out = tmp_path / "killed"
    config = write_yaml(tmp_path / "run.yaml", _cfg(out))
    proc = cli("pretrain", config)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # kill after the step-3 checkpoint, mid-run
        if (out / "log.jsonl").exists() and len((out / "log.jsonl").read_text().splitlines()) >= 4:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = len(read_log(out))
    assert 4 <= killed_at < STEPS, f"the run was not killed mid-training (logged {killed_at} steps)"

    resumed = cli("pretrain", config, "--resume")
    output = resumed.communicate(timeout=180)[0]
    assert resumed.returncode == 0, output
    assert "resumed from step" in output
    got = {r["step"]: r["loss"] for r in read_log(out)}
    assert sorted(got) == list(range(1, STEPS + 1))
    first_resumed = int(output.split("resumed from step")[1].split()[0]) + 1
    assert first_resumed <= killed_at
    for step in range(first_resumed, STEPS + 1):
        assert got[step] == want[step], f"step {step}: resumed {got[step]} != uninterrupted {want[step]}"


def test_checkpoint_interrupted_mid_write_never_replaces_the_last_good_one(tmp_path, monkeypatch):
    run_pretrain(_cfg(tmp_path, max_steps=3))
    good = ckpt.latest_checkpoint(tmp_path)
    assert good.name == "step_00000003"
    weights_before = openglm.load_model(good / "model").state_dict()

    real_save = torch.save

    def dying_save(obj, path, *a, **kw):  # write half a file, then crash
        real_save(obj, path, *a, **kw)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(ckpt.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        run_pretrain(_cfg(tmp_path, max_steps=6, resume=True))
    monkeypatch.undo()

    assert ckpt.latest_checkpoint(tmp_path) == good
    assert any(p.name.startswith(".tmp-") for p in (tmp_path / "checkpoints").iterdir())
    after = openglm.load_model(good / "model").state_dict()
    assert all(torch.equal(after[k], v) for k, v in weights_before.items())
    state = torch.load(good / ckpt.STATE_FILE, weights_only=False)
    assert state["step"] == 3 and state["data"]["step"] == 3

    run_pretrain(_cfg(tmp_path, max_steps=6, resume=True))  # resumes from step 3, clears the debris
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_00000003", "step_00000006"]
    assert [r["step"] for r in read_log(tmp_path)] == [1, 2, 3, 4, 5, 6]


def test_keep_last_and_export_with_convert(tmp_path):
    run_pretrain(_cfg(tmp_path, max_steps=9, save_every=2, keep_last=2))
    names = [p.name for p in ckpt.list_checkpoints(tmp_path)]
    assert names == ["step_00000008", "step_00000009"]
    openglm.convert(tmp_path / "checkpoints" / names[-1] / "model", tmp_path / "chatglm", layout="chatglm")
    ours = openglm.load_model(tmp_path / "final")
    back = openglm.load_model(tmp_path / "chatglm")
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(ours(ids), back(ids))
    assert (tmp_path / "final" / "tokenizer.json").exists()
    assert (tmp_path / "loss.png").stat().st_size > 0
