"""Shared helpers for the data-pipeline tests: small real documents and recipe files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from openglm.data.corpus import load_sample
from openglm.data.readers import open_binary


def _write_jsonl(path: Path, docs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    return path


def _write_recipe(path: Path, inputs: list[dict], stages: list, output: Path, **top) -> Path:
    path.write_text(yaml.safe_dump({"name": "test", "output": str(output), "inputs": inputs, "stages": stages,
                                    **top}, allow_unicode=True))
    return path


@pytest.fixture(scope="session")
def sample_docs() -> list[dict]:
    """About 240 real documents of every language, cut to at most 3,000 chars to keep runs fast."""
    docs = []
    for lang, n in (("zh", 120), ("en", 60), ("code", 60)):
        for d in load_sample("train", lang=lang)[:n]:
            docs.append({"id": d["id"], "source": d["source"], "text": d["text"][:3000]})
    return docs


def _read_lines(path: Path) -> list[dict]:
    with open_binary(path) as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture
def read_lines():
    """Records of a (possibly compressed) JSONL file."""
    return _read_lines


@pytest.fixture
def write_recipe():
    return _write_recipe


@pytest.fixture
def write_jsonl():
    return _write_jsonl
