"""Streaming readers (JSONL plain/.gz/.zst, Parquet, plain-text folders) and sharded writers.

Readers never raise on bad records: an undecodable line, broken JSON, a missing or empty text
becomes a reject row with a reason, so the read stage can account for every record it saw. A damaged
file (truncated or corrupt compressed stream, unreadable Parquet, a file cut mid-record) keeps the
records read before the damage and adds one ``damaged_file`` reject whose detail names the file.
"""

from __future__ import annotations

import glob
import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .._deps import extra_imports
from .records import ORD_SHIFT, make_row, reject

with extra_imports("data"):
    import zstandard

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst")
TEXT_SUFFIXES = (".txt", ".md", ".rst")
READ = "read"  # the stage name every reader reject carries
DAMAGED = "damaged_file"  # the reason of the one reject a damaged input file gets
CHUNK = 1 << 16
# zstd input is fed in small pieces: one call returns all its output, and a crafted (RLE) stream
# expands ~32,000-fold, so this bounds a call's output to ~64 MB.
ZSTD_PIECE = 2048
GZIP_OUT = 1 << 22  # at most this much output per zlib call (a bomb expands ~1,000-fold)


class DamagedFile(OSError):
    """A compressed stream that is truncated, corrupt or not in the format its name says."""


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


def _zstd_chunks(fh) -> Iterator[bytes]:
    """Decompressed bytes of every zstd frame; raises ``DamagedFile`` where the stream breaks off.

    zstandard's stream readers end silently at a truncated frame, hence decompressobj and a check
    that the last frame was complete."""
    d, seen = None, False
    while piece := fh.read(ZSTD_PIECE):
        seen = True
        while piece:
            if d is None:
                d = zstandard.ZstdDecompressor().decompressobj()
            try:
                out = d.decompress(piece)
            except zstandard.ZstdError as e:
                what = "not a zstd stream" if "frame descriptor" in str(e) else "corrupt zstd stream"
                raise DamagedFile(f"{what} ({e})") from e
            if out:
                yield out
            piece, d = (d.unused_data, None) if d.eof else (b"", d)  # the next frame starts in unused_data
    if not seen:
        raise DamagedFile("empty file (not even a zstd frame header)")
    if d is not None:
        raise DamagedFile("truncated zstd stream (the last frame is incomplete)")


def _gzip_error(e: zlib.error, first: bool) -> DamagedFile:
    msg = str(e)
    if "incorrect header check" in msg and first:
        return DamagedFile("not a gzip stream (bad header)")
    if "incorrect data check" in msg or "incorrect length check" in msg:
        return DamagedFile(f"corrupt gzip stream: CRC/length check failed, the data read may be wrong ({e})")
    return DamagedFile(f"corrupt gzip stream ({e})")


def _gzip_chunks(fh) -> Iterator[bytes]:
    """Decompressed bytes of every gzip member; on corruption, first everything zlib could decode
    before the bad byte, then ``DamagedFile``."""
    d, seen, members = None, False, 0
    while chunk := fh.read(CHUNK):
        seen = True
        while chunk:
            if d is None:
                if members and not chunk.strip(b"\0"):
                    break  # zero padding after the last member, as the gzip module allows
                d = zlib.decompressobj(31)
            saved = d.copy()
            try:
                out = d.decompress(chunk, GZIP_OUT)
            except zlib.error as e:
                # zlib drops a failing call's output: replay the chunk byte by byte to salvage it
                for i in range(len(chunk)):
                    try:
                        part = saved.decompress(chunk[i:i + 1])
                    except zlib.error:
                        break
                    if part:
                        yield part
                raise _gzip_error(e, members == 0) from e
            if out:
                yield out
            if d.eof:
                chunk, d, members = d.unused_data, None, members + 1
            else:
                chunk = d.unconsumed_tail
    if not seen:
        raise DamagedFile("empty file (not even a gzip header)")
    if d is not None:
        raise DamagedFile("truncated gzip stream (ends before the end-of-stream marker)")


def decoded_chunks(path: str | Path) -> Iterator[bytes]:
    """The bytes of a possibly compressed file, in chunks; ``DamagedFile`` (an ``OSError``) where the
    stream is truncated or corrupt."""
    path = str(path)
    with open(path, "rb") as fh:
        if path.endswith(".gz"):
            yield from _gzip_chunks(fh)
        elif path.endswith(".zst"):
            yield from _zstd_chunks(fh)
        else:
            while chunk := fh.read(CHUNK):
                yield chunk


class _ChunkStream(io.RawIOBase):
    """A read-only file over ``decoded_chunks``."""

    def __init__(self, path: str | Path):
        self._chunks = decoded_chunks(path)
        self._buf, self._pos = b"", 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while self._pos >= len(self._buf):
            self._buf, self._pos = next(self._chunks, b""), 0
            if not self._buf:
                return 0
        n = min(len(b), len(self._buf) - self._pos)
        b[:n] = self._buf[self._pos:self._pos + n]
        self._pos += n
        return n

    def close(self) -> None:
        self._chunks.close()  # closes the file
        super().close()


def open_binary(path: str | Path):
    """Open a possibly compressed file for streaming binary reads; a truncated or corrupt stream
    raises ``DamagedFile`` instead of ending early."""
    path = str(path)
    if path.endswith((".gz", ".zst")):
        return io.BufferedReader(_ChunkStream(path), CHUNK)
    return open(path, "rb")


def read_unit(unit: Unit) -> Iterator[dict]:
    """Rows (documents and read rejects) of one unit, in record order."""
    readers = {"jsonl": _jsonl_records, "parquet": _parquet_records, "text": _text_records}
    base = unit.index << ORD_SHIFT
    for i, record in enumerate(readers[unit.format](unit)):
        if i >= unit.skip:
            yield _to_row(base + i, unit, i, record)


def _bad(ref: str, reason: str, preview: str = "", detail: str = "") -> tuple[str, str, str, str, str]:
    return ("bad", ref, reason, preview, detail)


def _damaged(path: str, what: str, n: int, preview: bytes = b"") -> tuple:
    return _bad(path, DAMAGED, preview[:200].decode("utf-8", "replace"), f"{path}: {what} after {n} records")


def _parse_line(raw: bytes, ref: str):
    """A record, or a reject tuple, from one line without its newline."""
    raw = raw.rstrip(b"\r")
    if not raw.strip():
        return _bad(ref, "blank_line")
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return _bad(ref, "invalid_utf8", f"byte {e.start}: " + raw[:200].decode("utf-8", "replace"))
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        return _bad(ref, "bad_json", f"{e.msg} at char {e.pos}: {line[:200]}")


def _jsonl_records(unit: Unit) -> Iterator:
    """Records line by line. A line over the size limit is dropped as it streams (only its preview
    is held), so neither a long line nor a decompression bomb is read into memory whole."""
    limit, path = unit.spec.max_doc_bytes, unit.path
    lineno, pending, oversize = 0, bytearray(), False
    try:
        for chunk in decoded_chunks(path):
            start = 0
            while (end := chunk.find(b"\n", start)) >= 0:
                lineno += 1
                ref = f"{path}:{lineno}"
                if oversize or len(pending) + end - start > limit:
                    head = bytes(pending[:200]) + chunk[start:start + 200]
                    yield _bad(ref, "too_large", head[:200].decode("utf-8", "replace"))
                else:
                    yield _parse_line(bytes(pending) + chunk[start:end] if pending else chunk[start:end], ref)
                pending.clear()
                oversize, start = False, end + 1
            if not oversize:
                pending += chunk[start:]
                if len(pending) > limit:
                    del pending[200:]
                    oversize = True
    except OSError as e:  # DamagedFile, or the disk failing under us
        yield _damaged(path, str(e) if isinstance(e, DamagedFile) else f"read error ({e})", lineno, pending)
        return
    if oversize:
        yield _bad(f"{path}:{lineno + 1}", "too_large", pending[:200].decode("utf-8", "replace"))
    elif pending:
        record = _parse_line(bytes(pending), f"{path}:{lineno + 1}")
        if isinstance(record, tuple) and record[2] in ("bad_json", "invalid_utf8"):
            # no newline and not a whole record: the file was cut, not one bad line written
            yield _damaged(path, "file ends mid-record (the last line has no newline and does not parse)",
                           lineno, pending)
        else:
            yield record


def _parquet_records(unit: Unit) -> Iterator:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(unit.path)
    except (pa.ArrowException, OSError, ValueError) as e:
        yield _damaged(unit.path, f"unreadable parquet file ({e})", 0)
        return
    if unit.spec.text_key not in pf.schema_arrow.names:
        raise ValueError(f"{unit.path}: no column {unit.spec.text_key!r} (columns: {pf.schema_arrow.names})")
    n = 0
    try:
        for batch in pf.iter_batches(batch_size=1024):
            rows = batch.to_pylist()
            yield from rows
            n += len(rows)
    except (pa.ArrowException, OSError, ValueError) as e:  # ValueError: e.g. a string column's bytes not UTF-8
        yield _damaged(unit.path, f"corrupt parquet data ({e})", n)


def _text_records(unit: Unit) -> Iterator:
    root = Path(unit.path)
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")) if root.is_dir() \
        else [root]
    for path in files:
        rel = str(path.relative_to(root)) if root.is_dir() else path.name
        try:
            data = path.read_bytes() if path.stat().st_size <= unit.spec.max_doc_bytes else None
        except OSError as e:
            yield _bad(rel, DAMAGED, "", f"{path}: unreadable file ({e})")
            continue
        if data is None:
            yield _bad(rel, "too_large")
            continue
        try:
            yield {"id": rel, "text": data.decode("utf-8")}
        except UnicodeDecodeError as e:
            preview = data[:200].decode("utf-8", "replace")
            if e.reason == "unexpected end of data" and e.end == len(data):
                # valid UTF-8 up to a character cut in two at the very end: a truncated file
                yield _bad(rel, DAMAGED, preview, f"{path}: file ends mid-character (truncated at byte {e.start})")
            else:
                yield _bad(rel, "invalid_utf8", f"byte {e.start}: " + preview)


def _to_row(ord_: int, unit: Unit, index: int, record) -> dict:
    spec = unit.spec
    if isinstance(record, tuple):  # a reader-level reject
        _, ref, reason, preview, detail = record
        row = make_row(ord_, ref, spec.source or spec.name, preview)
        return reject(row, READ, reason, detail)
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
