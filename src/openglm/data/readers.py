"""Streaming readers (JSONL plain/.gz/.zst, Parquet, plain-text folders) and sharded writers.

Readers never raise on bad records: an undecodable line, broken JSON, a missing or empty text
becomes a reject row with a reason, so the read stage can account for every record it saw.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import zstandard

from .records import ORD_SHIFT, make_row, reject

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst")
TEXT_SUFFIXES = (".txt", ".md", ".rst")
READ = "read"  # the stage name every reader reject carries


@dataclass
class InputSpec:
    """One ``inputs:`` entry of a recipe."""

    path: str = ""  # a file, a glob or a folder
    format: str = "auto"  # auto | jsonl | parquet | text
    source: str | None = None  # fixed source name; else the record's "source" field, else `name`
    name: str | None = None
    text_key: str = "text"
    id_key: str = "id"
    lang_key: str | None = "lang"  # a record field that already names the language (e.g. "code")
    lang: str | None = None  # a fixed language for the whole input
    max_doc_bytes: int = 16 << 20  # larger records are rejected unread ("too_large")
    sample: str | None = None  # "train" | "heldout": the corpus shipped with openglm

    def __post_init__(self):
        if bool(self.path) == bool(self.sample):
            raise ValueError("an input needs exactly one of 'path' or 'sample'")
        if self.format not in ("auto", "jsonl", "parquet", "text"):
            raise ValueError(f"input {self.path!r}: unknown format {self.format!r} (jsonl, parquet, text)")
        if self.sample:
            from .corpus import sample_path

            self.path = str(sample_path(self.sample))
        if self.name is None:
            self.name = Path(self.path.rstrip("/")).name.split(".")[0] or "input"


@dataclass
class Unit:
    """One independently readable piece of input (a file, or a whole text folder); the engines'
    unit of parallelism."""

    index: int
    path: str
    format: str
    spec: InputSpec | None = None  # None for the pipeline's own intermediate files
    skip: int = 0  # records to skip (resuming)
    count: int = 0  # records it holds, where known (spill), for progress totals


def detect_format(path: Path) -> str:
    name = path.name.lower()
    if path.is_dir() or name.endswith(TEXT_SUFFIXES):
        return "text"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    raise ValueError(f"{path}: cannot tell the format from the name; set 'format:' in the recipe")


def expand_inputs(specs: list[InputSpec]) -> list[Unit]:
    """Resolve paths/globs into units in a fixed order; a pattern matching nothing is an error."""
    units: list[Unit] = []
    for spec in specs:
        path = Path(spec.path)
        matches = [path] if path.exists() else [Path(p) for p in sorted(glob.glob(spec.path, recursive=True))]
        if not matches:
            raise FileNotFoundError(f"input {spec.path!r} matches no file")
        for match in matches:
            fmt = detect_format(match) if spec.format == "auto" else spec.format
            units.append(Unit(index=len(units), path=str(match), format=fmt, spec=spec))
    if len(units) >= 1 << (63 - ORD_SHIFT):
        raise ValueError(f"too many input files ({len(units)})")
    return units


def open_binary(path: str | Path):
    """Open a possibly compressed file for streaming binary reads."""
    path = str(path)
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    if path.endswith(".zst"):
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True))
    return open(path, "rb")


def read_unit(unit: Unit) -> Iterator[dict]:
    """Rows (documents and read rejects) of one unit, in record order."""
    readers = {"jsonl": _jsonl_records, "parquet": _parquet_records, "text": _text_records}
    base = unit.index << ORD_SHIFT
    for i, record in enumerate(readers[unit.format](unit)):
        if i >= unit.skip:
            yield _to_row(base + i, unit, i, record)


def _bad(ref: str, reason: str, preview: str = "") -> tuple[str, str, str, str]:
    return ("bad", ref, reason, preview)


def _jsonl_records(unit: Unit) -> Iterator:
    limit = unit.spec.max_doc_bytes
    with open_binary(unit.path) as fh:
        for lineno, raw in enumerate(fh, 1):
            ref = f"{unit.path}:{lineno}"
            raw = raw.rstrip(b"\r\n")
            if len(raw) > limit:
                yield _bad(ref, "too_large", raw[:200].decode("utf-8", "replace"))
            elif not raw.strip():
                yield _bad(ref, "blank_line")
            else:
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    yield _bad(ref, "invalid_utf8", f"byte {e.start}: " + raw[:200].decode("utf-8", "replace"))
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    yield _bad(ref, "bad_json", f"{e.msg} at char {e.pos}: {line[:200]}")


def _parquet_records(unit: Unit) -> Iterator:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(unit.path)
    if unit.spec.text_key not in pf.schema_arrow.names:
        raise ValueError(f"{unit.path}: no column {unit.spec.text_key!r} (columns: {pf.schema_arrow.names})")
    for batch in pf.iter_batches(batch_size=1024):
        yield from batch.to_pylist()


def _text_records(unit: Unit) -> Iterator:
    root = Path(unit.path)
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")) if root.is_dir() \
        else [root]
    for path in files:
        rel = str(path.relative_to(root)) if root.is_dir() else path.name
        data = path.read_bytes() if path.stat().st_size <= unit.spec.max_doc_bytes else None
        if data is None:
            yield _bad(rel, "too_large")
            continue
        try:
            yield {"id": rel, "text": data.decode("utf-8")}
        except UnicodeDecodeError as e:
            yield _bad(rel, "invalid_utf8", f"byte {e.start}: " + data[:200].decode("utf-8", "replace"))


def _to_row(ord_: int, unit: Unit, index: int, record) -> dict:
    spec = unit.spec
    if isinstance(record, tuple):  # a reader-level reject
        _, ref, reason, preview = record
        row = make_row(ord_, ref, spec.source or spec.name, preview)
        return reject(row, READ, reason)
    source = spec.source or (record.get("source") if isinstance(record, dict) else None) or spec.name
    if not isinstance(record, dict):
        return reject(make_row(ord_, f"{unit.path}:{index + 1}", str(source), str(record)), READ, "not_an_object")
    doc_id = record.get(spec.id_key)
    doc_id = str(doc_id) if doc_id is not None else f"{source}/{Path(unit.path).name}:{index}"
    text = record.get(spec.text_key)
    lang = spec.lang or (record.get(spec.lang_key) if spec.lang_key else None) or ""
    skip = {spec.id_key, spec.text_key, "source", spec.lang_key}
    extra = {k: v for k, v in record.items() if k not in skip}
    row = make_row(ord_, doc_id, str(source), text if isinstance(text, str) else "", str(lang),
                   json.dumps(extra, ensure_ascii=False, sort_keys=True, default=str) if extra else "")
    if not isinstance(text, str):
        return reject(row, READ, "missing_text", f"field {spec.text_key!r} is {type(text).__name__}")
    if not text.strip():
        return reject(row, READ, "empty_text")
    try:
        for value in (text, row["meta"], row["id"], row["source"], row["lang"]):
            value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates written as JSON escapes
        return reject(row, READ, "invalid_unicode")
    return row


def read_spill(path: str | Path, skip: int = 0) -> Iterator[dict]:
    """Rows written by a previous segment (bookkeeping fields included)."""
    with open_binary(path) as fh:
        for i, line in enumerate(fh):
            if i >= skip:
                row = json.loads(line)
                row["_key"] = b""
                yield row


class ShardedJsonlWriter:
    """Writes records to ``{prefix}-00000.jsonl.zst``, ``-00001``, ... rotating every
    ``max_records``; zstd at a fixed level is deterministic, so equal input gives equal bytes."""

    def __init__(self, directory: str | Path, prefix: str = "part", max_records: int = 50_000,
                 compress: bool = True):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.prefix, self.max_records, self.compress = prefix, max_records, compress
        self.paths: list[Path] = []
        self.counts: list[int] = []
        self._fh = None

    def _open(self) -> None:
        suffix = ".jsonl.zst" if self.compress else ".jsonl"
        path = self.directory / f"{self.prefix}-{len(self.paths):05d}{suffix}"
        raw = open(path, "wb")
        self._fh = zstandard.ZstdCompressor(level=3).stream_writer(raw, closefd=True) if self.compress else raw
        self.paths.append(path)
        self.counts.append(0)

    def write(self, record: dict) -> None:
        if self._fh is None or self.counts[-1] >= self.max_records:
            self.close_shard()
            self._open()
        self._fh.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        self.counts[-1] += 1

    def close_shard(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def close(self) -> list[Path]:
        self.close_shard()
        return self.paths


def write_parquet(path: str | Path, records: list[dict]) -> None:
    """Small helper for tests and exports: a list of flat dicts as one Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(records), str(path))
