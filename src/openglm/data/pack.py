"""Tokenize and pack documents into uint32 token shards that training memory-maps.

Layout of ``tokens/``::

    shard-00000.bin   uint32 little-endian token ids, each document followed by EOS
    shard-00000.idx   uint64 offsets (in tokens) of document starts, plus the end
    index.json        dtype, tokenizer, per-shard counts and sha256

A shard is written to ``.tmp``, renamed when complete, and only then recorded in
``pack_state.json`` (written atomically) together with how far into the input it got. A rerun after
a crash drops unrecorded files and continues from the recorded position; since shard contents
depend only on the (deterministic) document order, the result is byte-identical to an
uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import numpy as np

from .stages.base import Stage

CRASH_ENV = "OPENGLM_DATA_CRASH_AT_SHARD"  # test hook: SIGKILL ourselves mid-way through shard N
ENCODE_CHUNK = 1 << 20  # encode huge texts piecewise: BPE on one giant piece is slow


@lru_cache(maxsize=4)
def load_tokenizer_spec(spec: str):
    """``"default"`` (openglm's built-in 16k vocabulary) or a path for ``load_tokenizer``."""
    from openglm.tokenizer import default_tokenizer, load_tokenizer

    return default_tokenizer() if spec == "default" else load_tokenizer(spec)


def encode_chunked(tokenizer, text: str) -> list[int]:
    return [t for i in range(0, len(text), ENCODE_CHUNK) for t in tokenizer.encode(text[i:i + ENCODE_CHUNK])]


@dataclass
class Pack(Stage):
    kind: ClassVar[str] = "pack"
    tokens_per_shard: int = 1 << 26  # a shard closes at the first document end past this
    append_eos: bool = True

    def __post_init__(self):
        super().__post_init__()
        if self.tokens_per_shard < 1:
            raise ValueError("pack: tokens_per_shard must be positive")


def encode_row(tokenizer, row: dict, append_eos: bool) -> bytes:
    ids = encode_chunked(tokenizer, row["text"])
    if append_eos:
        ids.append(tokenizer.eos_id)
    return np.asarray(ids, dtype="<u4").tobytes()


def _write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class ShardWriter:
    """Appends documents' tokens to shards; ``state`` is what a resumed run continues from."""

    def __init__(self, directory: Path, tokens_per_shard: int, tokenizer_info: dict):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tokens_per_shard = tokens_per_shard
        self.tokenizer_info = tokenizer_info
        self.state_path = self.dir / "pack_state.json"
        self.state = json.loads(self.state_path.read_text()) if self.state_path.exists() else \
            {"shards": [], "epoch": 0, "next_doc": 0, "progress": {}}
        self._drop_unrecorded()
        self._fh = None
        self._offsets: list[int] = []
        self._n_tokens = 0
        self._crash_at = int(os.environ.get(CRASH_ENV, "-1"))

    def _drop_unrecorded(self) -> None:
        recorded = {s["file"] for s in self.state["shards"]} | {s["file"][:-4] + ".idx" for s in self.state["shards"]}
        for path in self.dir.iterdir():
            if path.name.startswith("shard-") and path.name not in recorded:
                path.unlink()
        (self.dir / "index.json").unlink(missing_ok=True)

    def _name(self) -> str:
        return f"shard-{len(self.state['shards']):05d}"

    def add(self, tokens: bytes) -> None:
        if self._fh is None:
            self._fh = open(self.dir / f"{self._name()}.bin.tmp", "wb")
            self._offsets, self._n_tokens = [0], 0
        self._fh.write(tokens)
        self._n_tokens += len(tokens) // 4
        self._offsets.append(self._n_tokens)
        if self._crash_at == len(self.state["shards"]) and self._n_tokens * 2 >= self.tokens_per_shard:
            self._fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    def shard_full(self) -> bool:
        return self._fh is not None and self._n_tokens >= self.tokens_per_shard

    def close_shard(self, epoch: int, next_doc: int, progress: dict) -> None:
        """Finish the open shard and record the input position reached (documents consumed)."""
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None
            name = self._name()
            np.asarray(self._offsets, dtype="<u8").tofile(self.dir / f"{name}.idx")
            os.replace(self.dir / f"{name}.bin.tmp", self.dir / f"{name}.bin")
            self.state["shards"].append({"file": f"{name}.bin", "n_tokens": self._n_tokens,
                                         "n_docs": len(self._offsets) - 1,
                                         "sha256": _sha256(self.dir / f"{name}.bin")})
        self.state.update(epoch=epoch, next_doc=next_doc, progress=progress)
        _write_json_atomic(self.state_path, self.state)

    def finish(self) -> dict:
        index = {"format": "openglm-token-shards-v1", "dtype": "uint32", "eos_separated": True,
                 "tokenizer": self.tokenizer_info, "shards": self.state["shards"],
                 "n_tokens": sum(s["n_tokens"] for s in self.state["shards"]),
                 "n_docs": sum(s["n_docs"] for s in self.state["shards"])}
        _write_json_atomic(self.dir / "index.json", index)
        return index


class TokenShards:
    """Read side: ``len``, ``doc(i)``, ``tokens(shard)`` as memory maps, no copies."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        index_path = self.dir / "index.json"
        if not index_path.exists():
            raise FileNotFoundError(f"{index_path} missing: not a finished token-shard folder")
        self.index = json.loads(index_path.read_text())
        self._tokens = [np.memmap(self.dir / s["file"], dtype="<u4", mode="r") if s["n_tokens"] else
                        np.zeros(0, "<u4") for s in self.index["shards"]]
        self._offsets = [np.fromfile(self.dir / (s["file"][:-4] + ".idx"), dtype="<u8") for s in self.index["shards"]]
        self._doc_starts = np.cumsum([0] + [s["n_docs"] for s in self.index["shards"]])

    @property
    def n_tokens(self) -> int:
        return int(self.index["n_tokens"])

    def __len__(self) -> int:
        return int(self.index["n_docs"])

    def tokens(self, shard: int) -> np.ndarray:
        return self._tokens[shard]

    def doc(self, i: int) -> np.ndarray:
        if not 0 <= i < len(self):
            raise IndexError(f"document {i} out of range (0..{len(self) - 1})")
        shard = int(np.searchsorted(self._doc_starts, i, side="right")) - 1
        j = i - self._doc_starts[shard]
        offsets = self._offsets[shard]
        return self._tokens[shard][offsets[j]:offsets[j + 1]]
