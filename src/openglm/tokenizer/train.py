"""Learning a byte-level BPE vocabulary from text.

The pair counting and merging run in ``rustbpe`` (nanochat's Rust trainer,
GPT-4-style: regex pre-split, then byte-pair merges). This module feeds it text
from strings or files, accounts for every input line it cannot use, and returns
tiktoken-style ranks: the 256 single bytes at ranks 0..255 in byte order, then
one token per merge in the order the merges were learned.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .core import GLM4_PAT_STR

# Text files are handed to the trainer in chunks of whole lines about this big:
# large enough that per-string overhead vanishes, small enough to stream.
CHUNK_BYTES = 1 << 20
MAX_REJECT_EXAMPLES = 20


@dataclass
class TextStats:
    """What was read for training: documents/chunks and bytes kept, lines rejected and why."""

    texts: int = 0
    bytes: int = 0
    rejected: Counter = field(default_factory=Counter)  # reason -> lines
    examples: list[str] = field(default_factory=list)  # "file:line: reason", the first few

    def reject(self, where: str, reason: str) -> None:
        self.rejected[reason] += 1
        if len(self.examples) < MAX_REJECT_EXAMPLES:
            self.examples.append(f"{where}: {reason}")

    @property
    def n_rejected(self) -> int:
        return sum(self.rejected.values())


class DamagedTrainingFile(ValueError):
    """A training file whose compressed stream is truncated or corrupt (or not the format its name
    says): training stops rather than learn from part of it without saying so."""


def _is_jsonl(path: Path) -> bool:
    suffixes = path.suffixes[-2:] if path.suffix in (".gz", ".zst") else path.suffixes[-1:]
    return bool(suffixes) and suffixes[0] in (".jsonl", ".json")


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Numbered raw lines of a plain, ``.gz`` or ``.zst`` file; ``DamagedTrainingFile`` naming the file
    where a compressed stream breaks off or is corrupt (gzip.open would raise a bare EOFError)."""
    # The data pipeline's checked decoders; imported here as they pull in pyarrow (via records).
    from openglm.data.readers import open_binary

    lineno = 0
    try:
        with open_binary(path) as f:
            for lineno, raw in enumerate(f, 1):
                yield lineno, raw
    except OSError as e:  # DamagedFile, or the disk failing under us
        raise DamagedTrainingFile(f"damaged input file {path}: {e} after {lineno} line(s)") from e


def read_file_texts(path: str | Path, stats: TextStats, text_field: str = "text") -> Iterator[str]:
    """Texts of one file: JSONL (``.jsonl``/``.json``, optionally ``.gz``/``.zst``) yields each record's
    ``text_field``; anything else is UTF-8 text (likewise optionally compressed) yielded in chunks of
    whole lines.

    Lines that are not valid UTF-8, not JSON objects or lack the text field are
    skipped and recorded in ``stats`` with their file and line number. A truncated or corrupt
    compressed file raises ``DamagedTrainingFile`` (a ``ValueError``) naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training input {path} does not exist")
    jsonl = _is_jsonl(path)
    chunk: list[str] = []
    size = 0
    for lineno, raw in _lines(path):
        where = f"{path}:{lineno}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            stats.reject(where, f"invalid UTF-8 at byte {e.start}")
            continue
        if jsonl:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                stats.reject(where, f"bad JSON ({e.msg})")
                continue
            text = record.get(text_field) if isinstance(record, dict) else None
            if not isinstance(text, str):
                stats.reject(where, f"no string {text_field!r} field")
                continue
            yield text
        else:
            chunk.append(line)
            size += len(raw)
            if size >= CHUNK_BYTES:
                yield "".join(chunk)
                chunk, size = [], 0
    if chunk:
        yield "".join(chunk)


def iter_texts(sources: Iterable[str | os.PathLike], stats: TextStats) -> Iterator[str]:
    """Strings are texts; ``os.PathLike`` objects (``Path``) are files read by ``read_file_texts``."""
    for src in sources:
        if isinstance(src, os.PathLike):
            texts: Iterable[str] = read_file_texts(src, stats)
        elif isinstance(src, str):
            texts = (src,)
        else:
            raise TypeError(f"training input must be str (text) or a path, got {type(src).__name__}")
        for text in texts:
            stats.texts += 1
            stats.bytes += len(text.encode("utf-8"))
            yield text


def _total_bytes(sources) -> int | None:
    """Bytes to read, for the progress bar: known only for a list of sources (on-disk size for files)."""
    if not isinstance(sources, (list, tuple)):
        return None
    total = 0
    for src in sources:
        if isinstance(src, str):
            total += len(src.encode("utf-8"))
        elif isinstance(src, os.PathLike) and os.path.isfile(src):
            total += os.path.getsize(src)
        else:
            return None  # iter_texts raises the precise error
    return total


def train_bpe(
    texts_or_files: Iterable[str | os.PathLike],
    vocab_size: int,
    pat_str: str = GLM4_PAT_STR,
    stats: TextStats | None = None,
    progress: bool = False,
) -> dict[bytes, int]:
    """Learn ``vocab_size`` byte-level BPE ranks (256 bytes + merges) from texts and/or files.

    ``str`` items are text, ``Path`` items are files (see ``read_file_texts``).
    Pass a ``TextStats`` to learn how much was read and what was rejected.
    Fewer ranks come back if the text runs out of pairs to merge.
    """
    import rustbpe
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    if vocab_size < 256:
        raise ValueError(f"vocab_size={vocab_size} is below the 256 single-byte tokens")
    stats = stats if stats is not None else TextStats()
    trainer = rustbpe.Tokenizer()
    with Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeElapsedColumn(), disable=not progress
    ) as bar:
        task = bar.add_task("counting pairs", total=_total_bytes(texts_or_files) if progress else None)

        def fed() -> Iterator[str]:
            for text in iter_texts(texts_or_files, stats):
                bar.update(task, completed=stats.bytes)
                yield text
            # Counting is done once the input is exhausted (rejected lines included);
            # rustbpe then merges without reporting progress.
            bar.update(task, description=f"learning {vocab_size - 256} merges", completed=bar.tasks[0].total)

        trainer.train_from_iterator(fed(), vocab_size, pattern=pat_str)
        bar.update(task, description="merges learned")
    if stats.texts == 0:
        raise ValueError("no training text: every input was empty or rejected")
    ranks = dict(trainer.get_mergeable_ranks())
    # The merge step relies on this layout; fail loudly if a trainer release changes it.
    if sorted(ranks.values()) != list(range(len(ranks))) or any(ranks[bytes([b])] != b for b in range(256)):
        raise RuntimeError("rustbpe returned ranks that are not 256 bytes followed by contiguous merges")
    return ranks


def digit_groups(max_digits: int = 3) -> list[bytes]:
    """Every string of 1..max_digits ASCII digits, shortest first."""
    return [str(n).zfill(k).encode() for k in range(1, max_digits + 1) for n in range(10 ** k)]


def reserve_pieces(ranks: dict[bytes, int], pieces: Iterable[bytes], size: int) -> dict[bytes, int]:
    """``size`` ranks that hold every piece: the learned merges are cut short to make room and
    the missing pieces follow them, shortest first.

    BPE merges are ordered, so any prefix of the ranks is a valid tokenizer. A piece must be
    the merge of two tokens already present (true of ``digit_groups()``), else BPE could never
    produce it and a ValueError names it.
    """
    order = sorted(ranks, key=ranks.get)
    wanted = sorted(set(pieces), key=lambda p: (len(p), p))

    def missing(keep: int) -> list[bytes]:
        kept = set(order[:keep])
        return [p for p in wanted if p not in kept]

    keep = min(size, len(order))
    # Dropping d ranks frees at most d slots, so jumping by the excess never drops too many.
    while keep > 256 and (excess := keep + len(missing(keep)) - size) > 0:
        keep = max(256, keep - excess)
    out = {t: i for i, t in enumerate(order[:keep])}
    for p in missing(keep):
        if not any(p[:i] in out and p[i:] in out for i in range(1, len(p))):
            raise ValueError(f"piece {p!r} is not the merge of two earlier tokens; BPE could never produce it")
        out[p] = len(out)
    if len(out) > size:
        raise ValueError(f"{len(wanted)} reserved pieces do not fit in {size} ranks")
    return out
