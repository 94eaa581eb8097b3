"""What every checkpoint file of openglm shares: names, the error type, file modes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

INDEX = "model.safetensors.index.json"
# a reward model's scalar head, beside its backbone's shards (openglm.train.reward_model): not a shard
REWARD_HEAD = "reward_head.safetensors"
SIDE_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
              "generation_config.json")
# safetensors dtype names of the tensors openglm stores (float weights; quantized integers)
SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I8": torch.int8,
                      "U8": torch.uint8}


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file or tensor at fault."""


def _umask() -> int:
    try:  # read, not set: setting it to learn it would briefly change it for every thread
        with open("/proc/self/status") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


def usual_mode(path: Path) -> None:
    """safetensors writes its files 0600 (through a temporary file); give them the mode every other
    file gets (0644 under the usual umask), so a saved model can be shared like the rest of its folder."""
    os.chmod(path, 0o666 & ~_umask())


def read_unmapped(file: Path, name: str, headers: dict) -> torch.Tensor:
    """One tensor of a safetensors file read with plain reads (the format: an 8-byte header length,
    the JSON header with each tensor's dtype, shape and byte range, then the data)."""
    if file not in headers:
        with open(file, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            headers[file] = (8 + n, json.loads(f.read(n)))
    start, header = headers[file]
    info = header[name]
    begin, end = info["data_offsets"]
    with open(file, "rb") as f:
        f.seek(start + begin)
        data = bytearray(f.read(end - begin))
    if len(data) != end - begin:
        raise OSError(f"{file.name} ends before tensor {name}")
    return torch.frombuffer(data, dtype=SAFETENSORS_DTYPES[info["dtype"]]).view(info["shape"]) if data else \
        torch.empty(info["shape"], dtype=SAFETENSORS_DTYPES[info["dtype"]])
