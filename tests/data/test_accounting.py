"""Messy input end to end: every record is accounted for, stage by stage, with reasons on disk."""

import collections
import gzip
import json

from openglm.data.pack import TokenShards
from openglm.data.run import run_recipe

STAGES = ["normalize", "langid", "quality", "safety", "pii", "exact_dedup", "fuzzy_dedup",
          {"pack": {"tokens_per_shard": 20_000}}]


def messy_lines(sample_docs) -> list[bytes]:
    good = [json.dumps(d, ensure_ascii=False).encode() for d in sample_docs[:40]]
    zh = sample_docs[0]["text"]
    return good + [
        b'{"id": "bad-utf8", "text": "caf\xc3 \xff\xfe broken bytes"}',
        b'{"id": "broken", "text": "no closing quote',
        b"[1, 2, 3]",
        b'{"id": "no-text", "body": "wrong field"}',
        b'{"id": "empty", "text": "   \\n "}',
        b"",
        b'{"id": "surrogate", "text": "lone \\ud800 surrogate"}',
        json.dumps({"id": "huge", "text": "巨" * ((50 << 20) // 3 + 1)}, ensure_ascii=False).encode(),  # > 50 MB
        json.dumps({"id": "long", "text": zh * (1_200_000 // len(zh) + 1)}, ensure_ascii=False).encode(),
        json.dumps({"id": "exact-copy", "source": sample_docs[1]["source"],
                    "text": sample_docs[1]["text"].upper() + "  "}, ensure_ascii=False).encode(),
        json.dumps({"id": "tiny", "text": "This is a short English note about the weather."}).encode(),
        json.dumps({"id": "french", "text": "Le chat dort sur la table de la cuisine depuis ce matin, et "
                    "personne n'ose le réveiller parce qu'il a l'air si paisible. " * 3}).encode(),
    ]


def test_every_stage_accounts_for_every_record(tmp_path, sample_docs, write_recipe, read_lines):
    lines = messy_lines(sample_docs)
    assert len(lines[-5]) > 50_000_000
    (tmp_path / "messy.jsonl").write_bytes(b"\n".join(lines[:30]) + b"\n")
    (tmp_path / "messy2.jsonl.gz").write_bytes(gzip.compress(b"\n".join(lines[30:]) + b"\n"))
    n_records = len(lines)
    recipe = write_recipe(tmp_path / "r.yaml", [{"path": "messy.jsonl"}, {"path": "messy2.jsonl.gz"}],
                          STAGES, tmp_path / "out")
    report = run_recipe(recipe)
    stages = report["stages"]
    rejects = collections.Counter()
    reasons = collections.defaultdict(collections.Counter)
    for path in sorted((tmp_path / "out" / "rejects").glob("*.jsonl")):
        for rec in read_lines(path):
            assert rec["reason"] and rec["id"] and "source" in rec
            rejects[rec["stage"]] += 1
            reasons[rec["stage"]][rec["reason"]] += 1

    assert stages[0]["stage"] == "read" and stages[0]["input"] == n_records
    for prev, stage in zip(stages, stages[1:]):
        assert stage["input"] == prev["kept"], stage["stage"]
    for stage in stages:
        assert stage["kept"] + stage["rejected"] == stage["input"], stage["stage"]
        assert stage["rejected"] == rejects[stage["stage"]], stage["stage"]
        assert stage["reasons"] == dict(reasons[stage["stage"]]), stage["stage"]
    assert set(reasons["read"]) == {"invalid_utf8", "bad_json", "not_an_object", "missing_text", "empty_text",
                                    "blank_line", "invalid_unicode", "too_large"}
    assert reasons["quality"]["too_long"] == 1 and reasons["quality"]["too_short"] >= 1
    assert reasons["langid"]["unwanted_lang"] == 1
    assert reasons["exact_dedup"]["exact_duplicate"] == 1

    out_docs = [d for p in sorted((tmp_path / "out" / "docs").glob("*.jsonl.zst")) for d in read_lines(p)]
    assert len(out_docs) == stages[-1]["kept"] == len(TokenShards(tmp_path / "out" / "tokens"))
    assert all(d["id"] and d["source"] and d["lang"] in ("zh", "en", "code") for d in out_docs)
    assert sum(stages[-1]["docs_by_lang"].values()) == len(out_docs)
