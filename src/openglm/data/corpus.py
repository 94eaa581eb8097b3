"""The bilingual sample corpus shipped inside openglm (see assets/corpus/README.md for sources and
licences). ``heldout`` holds documents kept out of ``train`` for evaluation: later People's Daily
articles (zh), Python documentation pages (en) and Python standard-library modules (code)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from .._deps import extra_imports

with extra_imports("data"):
    import zstandard

SPLITS = ("train", "heldout")


def sample_path(split: str = "train") -> Path:
    if split not in SPLITS:
        raise ValueError(f"sample corpus split must be one of {SPLITS}, not {split!r}")
    return Path(str(resources.files("openglm") / "assets" / "corpus" / f"{split}.jsonl.zst"))


def load_sample(split: str = "train", lang: str | None = None, source: str | None = None) -> list[dict]:
    """Documents ``{"id", "source", "lang", "text"}`` of a split; ``lang`` is "zh", "en" or "code"."""
    data = zstandard.ZstdDecompressor().decompress(sample_path(split).read_bytes())
    docs = [json.loads(line) for line in data.decode("utf-8").splitlines()]
    return [d for d in docs if (lang is None or d["lang"] == lang) and (source is None or d["source"] == source)]


def sample_recipe_path() -> Path:
    """A recipe running the train split through every stage (see ``openglm data run``)."""
    return Path(str(resources.files("openglm") / "assets" / "corpus" / "recipe.yaml"))
