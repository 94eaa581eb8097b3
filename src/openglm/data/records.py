"""The row every stage sees: a flat dict, identical in the local and the Ray engine.

A row is either a document (``_stage == ""``) or a reject (``_stage`` names the stage that
rejected it, ``_reason`` says why). Fields starting with ``_`` are pipeline bookkeeping and never
reach the output documents.
"""

from __future__ import annotations

import json

from .._deps import extra_imports

with extra_imports("data"):
    import pyarrow as pa

# _ord orders rows globally: (input unit << ORD_SHIFT) | record index in the unit. Every engine
# derives it the same way, which is what makes their outputs identical.
ORD_SHIFT = 40
PREVIEW_CHARS = 200

ROW_SCHEMA = pa.schema([
    ("_ord", pa.int64()),
    ("id", pa.string()),
    ("source", pa.string()),
    ("text", pa.large_string()),
    ("lang", pa.string()),
    ("meta", pa.string()),  # JSON of the input fields we carry but do not interpret
    ("_stage", pa.string()),
    ("_reason", pa.string()),
    ("_detail", pa.string()),
    ("_edits", pa.string()),  # space-separated "stage/what" notes of in-place changes
    ("_tokens", pa.int64()),
    ("_mult", pa.int64()),
    ("_key", pa.large_binary()),  # what the next barrier stage needs (a hash or a signature)
])

# What packing sends to the driver: one row per document read, with its token ids (little-endian
# uint32) when the document is present in the epoch being packed and empty bytes otherwise.
TOKENS_SCHEMA = pa.schema([("source", pa.string()), ("lang", pa.string()), ("tokens", pa.large_binary())])


def make_row(ord_: int, doc_id: str, source: str, text: str, lang: str = "", meta: str = "", mult: int = 1) -> dict:
    return {"_ord": ord_, "id": doc_id, "source": source, "text": text, "lang": lang, "meta": meta,
            "_stage": "", "_reason": "", "_detail": "", "_edits": "", "_tokens": 0, "_mult": mult, "_key": b""}


def reject(row: dict, stage: str, reason: str, detail: str = "") -> dict:
    """Turn a row into a reject; the text is cut to a preview (a 50 MB reject must not travel)."""
    row.update(_stage=stage, _reason=reason, _detail=_valid(detail), _key=b"")
    row["text"] = _valid(row["text"][:PREVIEW_CHARS])
    row["id"], row["source"] = _valid(row["id"]), _valid(row["source"])
    return row


def _valid(text: str) -> str:
    """Lone surrogates (from JSON escapes) cannot be written as UTF-8; rejects still must be."""
    return text.encode("utf-8", "replace").decode("utf-8")


def note_edit(row: dict, stage: str, what: str) -> None:
    row["_edits"] = f"{row['_edits']} {stage}/{what}".lstrip()


def output_doc(row: dict) -> dict:
    """The public form of a kept row: id, source, lang, text (+ repeat when mixing, + carried fields)."""
    doc = {"id": row["id"], "source": row["source"], "lang": row["lang"], "text": row["text"]}
    if row["_mult"] != 1:
        doc["repeat"] = row["_mult"]
    if row["meta"]:
        doc["meta"] = json.loads(row["meta"])
    return doc


def reject_record(row: dict) -> dict:
    """The line written to the rejects file."""
    rec = {"id": row["id"], "source": row["source"], "stage": row["_stage"], "reason": row["_reason"],
           "preview": row["text"]}
    if row["_detail"]:
        rec["detail"] = row["_detail"]
    return rec
