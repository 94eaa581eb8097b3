"""Token shards on disk and the deterministic step-indexed batch loader every stage uses.

Shard format (shared with the data pipeline; keep it this simple):

- a shard is a flat file of little-endian token ids, ``uint32`` by default, no header;
- a directory of shards may hold ``index.json``::

      {"dtype": "uint32", "shards": [{"path": "train-00000.bin", "tokens": 1048576}, ...]}

  ``path`` is relative to the directory and ``tokens`` is checked against the file size;
  without an index every ``*.bin`` in the directory is read in name order. Extra keys
  (tokenizer name, document counts, ...) are allowed and ignored.

Documents are separated inside the stream by an end-of-text token written by the pipeline;
the loader cuts the concatenated stream into windows of ``seq_len + 1`` tokens.

Batches are a pure function of (seed, step): an epoch is a seeded permutation of items, cut
into global batches; rank r takes its slice. The loader's whole position is the step count,
so resuming (or changing the number of processes at a fixed global batch) is exact.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

INDEX_FILE = "index.json"
DTYPES = {"uint16": np.uint16, "uint32": np.uint32}

Batch = dict[str, torch.Tensor]


def write_shard(path: str | Path, ids: Iterable[int] | np.ndarray, dtype: str = "uint32") -> Path:
    """Write token ids as one flat shard (the format this module reads)."""
    arr = np.asarray(ids, dtype=np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= np.iinfo(DTYPES[dtype]).max):
        raise ValueError(f"token ids out of range for {dtype} in {path}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr.astype(DTYPES[dtype]).tofile(path)
    return path


def write_index(directory: str | Path, shards: Sequence[str | Path], dtype: str = "uint32", **extra) -> Path:
    """Write ``index.json`` for shards already in ``directory``."""
    directory = Path(directory)
    size = np.dtype(DTYPES[dtype]).itemsize
    entries = [{"path": Path(s).name, "tokens": (directory / Path(s).name).stat().st_size // size} for s in shards]
    out = directory / INDEX_FILE
    out.write_text(json.dumps({"dtype": dtype, "shards": entries, **extra}, indent=2) + "\n")
    return out


def tokenize_text_files(files: Sequence[str | Path], tokenizer, out_dir: str | Path) -> Path:
    """Tokenize plain-text files (one document each; ``.jsonl`` lines with a "text" field are one
    document per line) into a single shard with index; each document ends with ``<|endoftext|>``.
    For small runs and tests; real corpora come from the data pipeline."""
    ids: list[int] = []
    for f in files:
        f = Path(f)
        if f.suffix == ".jsonl":
            docs = []
            for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        docs.append(json.loads(line)["text"])
                    except (json.JSONDecodeError, KeyError, TypeError) as e:
                        raise ValueError(f"{f}:{n}: expected a JSON object with a 'text' field ({e})") from None
        else:
            docs = [f.read_text(encoding="utf-8")]
        for doc in docs:
            ids += tokenizer.encode(doc) + [tokenizer.eos_id]
    out_dir = Path(out_dir)
    shard = write_shard(out_dir / "text-00000.bin", ids)
    write_index(out_dir, [shard], source=[str(f) for f in files])
    return out_dir


class TokenStream:
    """Memory-mapped shards seen as one token array; nothing is read until a slice is asked for."""

    def __init__(self, paths: str | Path | Sequence[str | Path]):
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        if not paths:
            raise ValueError("no token shards given")
        self.shards: list[np.ndarray] = []
        for p in map(Path, paths):
            self.shards += _open_shards(p)
        if not self.shards:
            raise ValueError(f"no token shards (*.bin) found in {', '.join(map(str, paths))}")
        self.offsets = np.cumsum([0] + [len(s) for s in self.shards])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start + length) as int64, across shard boundaries."""
        if start < 0 or start + length > len(self):
            raise IndexError(f"token range [{start}, {start + length}) outside the stream of {len(self)}")
        out, pos, end = [], start, start + length
        k = int(np.searchsorted(self.offsets, start, side="right")) - 1
        while pos < end:
            lo = pos - self.offsets[k]
            hi = min(end, self.offsets[k + 1]) - self.offsets[k]
            out.append(self.shards[k][lo:hi])
            pos += hi - lo
            k += 1
        return np.concatenate(out).astype(np.int64)


def _open_shards(path: Path) -> list[np.ndarray]:
    if path.is_file():
        return [np.memmap(path, dtype=np.uint32, mode="r")]
    if not path.is_dir():
        raise FileNotFoundError(f"token data {path} does not exist")
    index = path / INDEX_FILE
    if not index.exists():
        return [np.memmap(f, dtype=np.uint32, mode="r") for f in sorted(path.glob("*.bin"))]
    try:
        meta = json.loads(index.read_text())
        dtype = DTYPES[meta.get("dtype", "uint32")]
        entries = meta["shards"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{index}: not a shard index ({e!r}); "
                         "expected {'dtype': 'uint32', 'shards': [{'path': ..., 'tokens': ...}]}") from None
    shards = []
    for i, entry in enumerate(entries):
        f = path / entry["path"]
        if not f.exists():
            raise FileNotFoundError(f"shard {f} listed in {index} (shards[{i}]) is missing")
        mm = np.memmap(f, dtype=dtype, mode="r")
        if "tokens" in entry and len(mm) != entry["tokens"]:
            raise ValueError(f"shard {f} holds {len(mm)} tokens but {index} says {entry['tokens']} (truncated?)")
        shards.append(mm)
    return shards


class StepBatches:
    """Deterministic batches by optimizer step.

    ``epoch_plan(epoch)`` returns that epoch's global batches (lists of items); ``collate``
    turns a list of items (``None`` = an empty filler row) into a Batch. Each rank takes
    ``micro_batch * grad_accum`` items of a global batch, as ``grad_accum`` micro-batches.
    A short last global batch is filled with ``None`` rows (zero loss weight), so every rank
    runs the same number of forward passes and no item is dropped.
    """

    def __init__(self, epoch_plan: Callable[[int], list[list[Any]]], collate: Callable[[list[Any]], Batch],
                 micro_batch: int, grad_accum: int = 1, rank: int = 0, world: int = 1):
        self.epoch_plan, self.collate = epoch_plan, collate
        self.micro_batch, self.grad_accum, self.rank, self.world = micro_batch, grad_accum, rank, world
        self.global_batch = micro_batch * grad_accum * world
        self.step = 0  # global batches consumed: the loader's whole position
        self._plans: dict[int, list[list[Any]]] = {}

    def plan(self, epoch: int) -> list[list[Any]]:
        if epoch not in self._plans:
            self._plans = {epoch: self.epoch_plan(epoch)}  # keep one epoch in memory
            if not self._plans[epoch]:
                raise ValueError("the data yields no batches (empty dataset?)")
            too_big = [len(b) for b in self._plans[epoch] if len(b) > self.global_batch]
            if too_big:
                raise ValueError(f"epoch plan has a batch of {too_big[0]} items > global batch {self.global_batch}")
        return self._plans[epoch]

    def steps_per_epoch(self) -> int:
        return len(self.plan(0))

    def micro_batches(self, items: list[Any]) -> list[Batch]:
        """This rank's micro-batches of one global batch."""
        items = list(items) + [None] * (self.global_batch - len(items))
        per_rank = self.micro_batch * self.grad_accum
        mine = items[self.rank * per_rank:(self.rank + 1) * per_rank]
        return [self.collate(mine[m * self.micro_batch:(m + 1) * self.micro_batch]) for m in range(self.grad_accum)]

    def next(self) -> list[Batch]:
        """The micro-batches of the next step; advances the position."""
        spe = self.steps_per_epoch()
        epoch, index = divmod(self.step, spe)
        self.step += 1
        return self.micro_batches(self.plan(epoch)[index])

    def epoch(self, epoch: int = 0) -> Iterable[list[Batch]]:
        """Every step of one epoch (for evaluation); leaves the position alone."""
        for items in self.plan(epoch):
            yield self.micro_batches(items)

    def items(self, steps: int) -> list[Any]:
        """Every item (all ranks) of the first ``steps`` global batches, in order of use."""
        spe = self.steps_per_epoch()
        return [item for step in range(steps) for item in self.plan(step // spe)[step % spe]]

    def state_dict(self) -> dict:
        return {"step": self.step, "global_batch": self.global_batch}

    def load_state_dict(self, state: dict) -> None:
        if state["global_batch"] != self.global_batch:
            raise ValueError(f"checkpoint was written with global batch {state['global_batch']}, "
                             f"this run has {self.global_batch}: resuming would change the data order")
        self.step = state["step"]


def window_plan(windows: Sequence[int], global_batch: int, seed: int, shuffle: bool = True):
    """epoch -> global batches of (sample number, window index), a fresh permutation per epoch."""
    def plan(epoch: int) -> list[list[tuple[int, int]]]:
        n = len(windows)
        order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
        items = [(epoch * n + i, int(windows[k])) for i, k in enumerate(order)]
        return [items[i:i + global_batch] for i in range(0, len(items), global_batch)]
    return plan


def split_windows(stream: TokenStream, seq_len: int, eval_fraction: float) -> tuple[range, range]:
    """Window indices (each window: seq_len + 1 tokens starting at index * seq_len) for
    training and for a held-out evaluation tail of the stream."""
    n = (len(stream) - 1) // seq_len
    if n < 1:
        raise ValueError(f"token data holds {len(stream)} tokens, fewer than one window of {seq_len + 1}")
    n_eval = int(round(n * eval_fraction))
    if eval_fraction > 0 and (n_eval == 0 or n_eval == n):
        raise ValueError(f"eval_fraction {eval_fraction} of {n} windows of {seq_len + 1} tokens leaves an empty split")
    return range(n - n_eval), range(n - n_eval, n)
