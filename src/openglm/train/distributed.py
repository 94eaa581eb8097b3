"""Processes launched by torchrun: DDP or FSDP2 (``fully_shard``), NCCL on GPUs, gloo on CPUs.

    torchrun --nproc_per_node 2 -m openglm.train.cli pretrain configs/nano_pretrain.yaml --set distributed=fsdp

Every process runs the same script; rank 0 writes logs and checkpoints. Gradients are
averaged across processes by DDP/FSDP, so the trainer scales each process's loss by the
world size over the global normaliser (see objectives.py) to get the global-batch loss.
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

from ..model.glm import cpu_computes_natively


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(device: str = "auto") -> str:
    """`auto` is CUDA when there is a GPU, else the CPU; any other name is kept."""
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


HALF_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # autocast dtype of each precision name


def pick_precision(precision: str, device: torch.device) -> str:
    """`auto` is bf16 autocast where the device multiplies bf16 natively (a GPU that supports it,
    a CPU with AVX-512), else fp32; any other name is kept. Without AVX-512, bf16 autocast on a
    CPU made a training step ~60x slower than fp32 (scalar fallback kernels; BENCHMARKS.md)."""
    if precision != "auto":
        half = HALF_DTYPES.get(precision)
        if half is not None and device.type == "cpu" and not cpu_computes_natively(half):
            warnings.warn(f"precision={precision} on a CPU without native {precision} math (no AVX-512) runs "
                          "scalar kernels, many times slower than fp32; use precision auto or fp32", stacklevel=2)
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_computes_natively(torch.bfloat16) else "fp32"


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group torchrun set up (env RANK/WORLD_SIZE); a single process otherwise."""
    device = pick_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(device)
    if device == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return DistInfo(rank, world, local_rank, dev)


def wrap_model(model: nn.Module, mode: str, info: DistInfo) -> nn.Module:
    """DDP, or FSDP2 with one shard unit per transformer block plus the root."""
    if mode == "auto":
        mode = "ddp" if info.world > 1 else "none"
    if mode == "none":
        if info.world > 1:
            raise ValueError("distributed=none with several processes would train divergent copies")
        return model
    if not dist.is_initialized():
        raise ValueError(f"distributed={mode} needs a launch by torchrun (no process group)")
    if mode == "ddp":
        ids = [info.device.index] if info.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)
    from torch.distributed.fsdp import fully_shard

    for block in model.layers:
        fully_shard(block)
    fully_shard(model)
    return model


def gradient_sync(model: nn.Module, enabled: bool):
    """Skip the gradient all-reduce on all but the last micro-batch of a step."""
    if enabled:
        return nullcontext()
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        return _fsdp_no_sync(model)
    return nullcontext()


@contextmanager
def _fsdp_no_sync(model):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_gather_objects(obj) -> list:
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def close() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
