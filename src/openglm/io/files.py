"""What every checkpoint file of openglm shares: names, the error type, file modes."""

from __future__ import annotations

import os
from pathlib import Path

INDEX = "model.safetensors.index.json"
SIDE_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
              "generation_config.json")

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
