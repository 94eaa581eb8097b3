"""Token shards: contents, determinism, and byte-identical output after a kill and a rerun."""

import json
import os
import subprocess
import sys

import pytest

from openglm.data.pack import CRASH_ENV, TokenShards, load_tokenizer_spec
from openglm.data.run import run_recipe

STAGES = ["normalize", "quality", "exact_dedup", {"mix": {"weights": {"python_stdlib": 2.0}}},
          {"pack": {"tokens_per_shard": 8_000}}]


@pytest.fixture
def recipe(tmp_path, sample_docs, write_jsonl, write_recipe):
    def make(out_name: str):
        docs = [dict(d, lang="code" if d["source"] == "python_stdlib" else "") for d in sample_docs]
        write_jsonl(tmp_path / "in.jsonl", docs)
        return write_recipe(tmp_path / f"{out_name}.yaml", [{"path": "in.jsonl"}], ["langid"] + STAGES,
                            tmp_path / out_name, docs_per_shard=100)
    return make


def shard_bytes(tokens_dir) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(tokens_dir.iterdir()) if p.name != "pack_state.json"}


def test_shards_hold_each_document_then_eos_and_repeat_mixed_sources(recipe, read_lines, tmp_path):
    report = run_recipe(recipe("a"))
    shards = TokenShards(tmp_path / "a" / "tokens")
    docs = [d for p in sorted((tmp_path / "a" / "docs").glob("*.zst")) for d in read_lines(p)]
    tok = load_tokenizer_spec("default")
    repeats = [d for d in docs if d.get("repeat", 1) == 2]
    assert repeats and all(d["source"] == "python_stdlib" for d in repeats)
    order = docs + repeats  # epoch 0 holds every document, epoch 1 the repeated ones again
    assert len(shards) == len(order) == report["pack"]["n_docs"]
    for i, doc in enumerate(order):
        assert shards.doc(i).tolist() == tok.encode(doc["text"]) + [tok.eos_id]
    assert len(shards.index["shards"]) > 3 and shards.n_tokens == sum(s["n_tokens"] for s in shards.index["shards"])
    assert shards.tokens(0).dtype.str == "<u4" and shards.tokens(0).max() < tok.vocab_size


def test_killed_pack_resumes_to_byte_identical_shards(recipe, tmp_path):
    run_recipe(recipe("clean"))
    expected = shard_bytes(tmp_path / "clean" / "tokens")
    crashed = recipe("crashed")
    cmd = [sys.executable, "-m", "openglm.data.cli", "run", str(crashed), "--quiet"]
    killed = subprocess.run(cmd, env={**os.environ, CRASH_ENV: "2"}, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    tokens_dir = tmp_path / "crashed" / "tokens"
    state = json.loads((tokens_dir / "pack_state.json").read_text())
    assert len(state["shards"]) == 2 and (tokens_dir / "shard-00002.bin.tmp").exists()
    assert not (tokens_dir / "index.json").exists()
    rerun = subprocess.run(cmd, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert shard_bytes(tokens_dir) == expected
    report = json.loads((tmp_path / "crashed" / "report.json").read_text())
    clean = json.loads((tmp_path / "clean" / "report.json").read_text())
    assert report["pack"] == {**clean["pack"], "dir": report["pack"]["dir"]}
    assert report["stages"] == clean["stages"]
