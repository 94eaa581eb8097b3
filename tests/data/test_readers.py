import gzip
import json

import pytest
import zstandard

from openglm.data.readers import (
    InputSpec,
    ShardedJsonlWriter,
    expand_inputs,
    open_binary,
    read_unit,
    write_parquet,
)

DOCS = [{"id": f"d{i}", "source": "web" if i % 2 else "books", "text": f"第{i}个文档。Document number {i}.",
         "url": f"http://x/{i}"} for i in range(7)]


def _read(spec: InputSpec) -> list[dict]:
    return [row for unit in expand_inputs([spec]) for row in read_unit(unit)]


def _lines() -> bytes:
    return "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in DOCS).encode()


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet"])
def test_every_format_yields_the_same_documents_with_id_source_and_extra_fields(tmp_path, suffix):
    path = tmp_path / f"in{suffix}"
    if suffix == ".jsonl":
        path.write_bytes(_lines())
    elif suffix == ".jsonl.gz":
        path.write_bytes(gzip.compress(_lines()))
    elif suffix == ".jsonl.zst":
        path.write_bytes(zstandard.ZstdCompressor().compress(_lines()))
    else:
        write_parquet(path, DOCS)
    rows = _read(InputSpec(path=str(path)))
    assert [(r["id"], r["source"], r["text"]) for r in rows] == [(d["id"], d["source"], d["text"]) for d in DOCS]
    assert all(json.loads(r["meta"]) == {"url": d["url"]} for r, d in zip(rows, DOCS))
    assert all(not r["_stage"] for r in rows)


def test_text_folder_is_one_document_per_file_with_path_ids(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("甲乙丙", encoding="utf-8")
    (tmp_path / "sub" / "b.md").write_text("hello", encoding="utf-8")
    (tmp_path / "sub" / "bad.txt").write_bytes(b"ok \xff\xfe")
    rows = _read(InputSpec(path=str(tmp_path), source="notes"))
    by_id = {r["id"]: r for r in rows}
    assert by_id["a.txt"]["text"] == "甲乙丙" and by_id["sub/b.md"]["text"] == "hello"
    assert by_id["sub/bad.txt"]["_reason"] == "invalid_utf8"
    assert {r["source"] for r in rows} == {"notes"}


def test_missing_ids_and_sources_are_made_up_stably(tmp_path):
    path = tmp_path / "plain.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b"}\n')
    first, second = _read(InputSpec(path=str(path))), _read(InputSpec(path=str(path)))
    assert [r["id"] for r in first] == [r["id"] for r in second] == ["plain/plain.jsonl:0", "plain/plain.jsonl:1"]
    assert {r["source"] for r in first} == {"plain"}


def test_glob_order_and_errors(tmp_path):
    for name in ("b.jsonl", "a.jsonl"):
        (tmp_path / name).write_text('{"text": "x"}\n')
    units = expand_inputs([InputSpec(path=str(tmp_path / "*.jsonl"))])
    assert [u.path.rsplit("/", 1)[1] for u in units] == ["a.jsonl", "b.jsonl"]
    with pytest.raises(FileNotFoundError, match="matches no file"):
        expand_inputs([InputSpec(path=str(tmp_path / "*.parquet"))])
    with pytest.raises(ValueError, match="exactly one of"):
        InputSpec()


def test_sharded_writer_rotates_and_is_deterministic(tmp_path):
    outs = []
    for run in ("x", "y"):
        writer = ShardedJsonlWriter(tmp_path / run, max_records=3)
        for d in DOCS:
            writer.write(d)
        paths = writer.close()
        outs.append([p.read_bytes() for p in paths])
    assert len(outs[0]) == 3 and outs[0] == outs[1]
    back = []
    for path in paths:
        with open_binary(path) as fh:
            back += [json.loads(line) for line in fh]
    assert back == DOCS
