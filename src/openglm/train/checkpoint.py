"""Training checkpoints: atomic, complete, exportable.

    OUT_DIR/checkpoints/step_00000100/
        model/              the weights, written by openglm.save_model (hf layout, training
                            dtype): `openglm convert` and openglm.load_model read it directly;
                            a reward model adds its head (train/reward_model.py)
        adapter/            LoRA runs: the PEFT adapter (the base weights are not copied into
                            every checkpoint; they come back from the run's `model` setting)
        trainer_state.pt    optimizer, LR scheduler, step, data position, RNG states of every
                            process, LoRA tensors, the run config

A checkpoint is written into ``.tmp-step_...`` and renamed into place only when every file
is on disk (fsync), so a crash or kill mid-write leaves the previous checkpoints as they
were; the next save clears the debris. Resuming picks the newest ``step_*`` directory.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from ..io import load_model, save_model
from ..model.glm import GLM
from . import distributed as D
from .lora import lora_layers, save_adapter
from .reward_model import RewardModel, is_reward_model, read_reward_model, save_reward_model

STATE_FILE = "trainer_state.pt"
_STEP_DIR = re.compile(r"step_(\d+)")


def checkpoint_root(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_root(out_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.fullmatch(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_tree(path: Path) -> None:
    for p in sorted(path.rglob("*")) + [path]:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _split_lora(full: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    lora = {k: v for k, v in full.items() if ".lora_" in k}
    return {k: v for k, v in full.items() if k not in lora}, lora


def save_checkpoint(out_dir: str | Path, step: int, model: nn.Module, raw_model: GLM, optimizer, scheduler,
                    extra: dict, keep_last: int, info: D.DistInfo) -> Path | None:
    """Every process calls this (gathering sharded state is collective); rank 0 writes.
    ``model`` is the wrapped model (DDP/FSDP), ``raw_model`` the GLM inside it."""
    full_model, full_optim = get_state_dict(model, optimizer,
                                            options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    rngs = D.all_gather_objects(rng_state())
    final = None
    if info.is_main:
        root = checkpoint_root(out_dir)
        root.mkdir(parents=True, exist_ok=True)
        for debris in root.glob(".tmp-*"):
            shutil.rmtree(debris, ignore_errors=True)
        tmp = root / f".tmp-step_{step:08d}"
        tmp.mkdir()
        base, lora = _split_lora(full_model)
        if lora:
            save_adapter(raw_model, tmp / "adapter", lora_state=lora)
        else:
            _save_weights(raw_model, base, tmp / "model")
        torch.save({"step": step, "optimizer": full_optim, "scheduler": scheduler.state_dict(), "rng": rngs,
                    "lora": lora or None, **extra}, tmp / STATE_FILE)
        _fsync_tree(tmp)
        final = root / f"step_{step:08d}"
        if final.exists():  # re-saving a step after a resume: the new one replaces it
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_tree(root)
        for old in list_checkpoints(out_dir)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    D.barrier()
    return final


def _save_weights(raw_model: GLM | RewardModel, state: dict[str, torch.Tensor], out: Path) -> None:
    """Full (gathered) tensors of ``raw_model``'s structure -> openglm.save_model (a reward model:
    save_reward_model)."""
    reward = isinstance(raw_model, RewardModel)
    with torch.device("meta"):
        shell = RewardModel(GLM(raw_model.config)) if reward else GLM(raw_model.config)
    shell.load_state_dict(state, strict=True, assign=True)
    if reward:
        save_reward_model(shell, out)
        return
    if raw_model.config.tie_embeddings:
        shell.lm_head.weight = shell.embed.weight
    save_model(shell, out, layout="hf")


def load_checkpoint(path: str | Path, model: nn.Module, optimizer, scheduler, info: D.DistInfo) -> dict:
    """Restore weights, optimizer, scheduler and this process's RNG; returns the saved state."""
    path = Path(path)
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)
    weights = _read_weights(path / "model")
    if state.get("lora"):
        weights.update(state["lora"])
    has_lora = bool(lora_layers(model))
    set_state_dict(model, optimizer, model_state_dict=weights, optim_state_dict=state["optimizer"],
                   options=StateDictOptions(full_state_dict=True, strict=not has_lora))
    scheduler.load_state_dict(state["scheduler"])
    rngs = state["rng"]
    set_rng_state(rngs[info.rank] if len(rngs) == info.world else rngs[0])
    return state


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The state dict saved in a checkpoint's model/ (none for LoRA runs)."""
    if not path.is_dir():
        return {}
    return (read_reward_model(path) if is_reward_model(path) else load_model(path)).state_dict()
