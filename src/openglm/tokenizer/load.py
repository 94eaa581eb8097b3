"""Loading tokenizers from disk and the built-in small default tokenizer."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path

from .core import GLM4_PAT_STR, Tokenizer, glm4_special_tokens, parse_rank_file, read_rank_file
from .hf import pat_str_from_hf, ranks_from_hf, specials_from_hf

CL100K_ASSET = "cl100k_base.tiktoken"
DEFAULT_VOCAB = 16384


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _specials_from_config(path: Path) -> dict[str, int] | None:
    # GLM-4's original tokenizer_config.json lists its specials here.
    if not path.is_file():
        return None
    decoder = _read_json(path).get("added_tokens_decoder") or {}
    return {v["content"]: int(k) for k, v in decoder.items()} or None


def _from_hf_json(path: Path) -> Tokenizer:
    data = _read_json(path)
    return Tokenizer(
        ranks_from_hf(data),
        pat_str=pat_str_from_hf(data) or GLM4_PAT_STR,
        special_tokens=specials_from_hf(data) or None,
        name=path.parent.name or "tokenizer",
    )


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load from a directory or file.

    A directory may hold GLM-4's ``tokenizer.model`` (tiktoken rank file) and/or
    a transformers ``tokenizer.json``. The rank file is preferred (no merge
    conversion needed); the split regex and special ids are then taken from
    tokenizer.json or tokenizer_config.json when present, else GLM-4's.
    A file path is read as tokenizer.json if it ends in ``.json``, otherwise
    as a rank file with GLM-4's regex and specials.
    """
    path = Path(path)
    if path.is_dir():
        model, hf_json = path / "tokenizer.model", path / "tokenizer.json"
        if model.is_file():
            pat_str, specials = GLM4_PAT_STR, None
            if hf_json.is_file():
                data = _read_json(hf_json)
                pat_str = pat_str_from_hf(data) or pat_str
                specials = specials_from_hf(data) or None
            if specials is None:
                specials = _specials_from_config(path / "tokenizer_config.json")
            return Tokenizer(read_rank_file(model), pat_str=pat_str, special_tokens=specials, name=path.name)
        if hf_json.is_file():
            return _from_hf_json(hf_json)
        raise FileNotFoundError(f"{path} has neither tokenizer.model nor tokenizer.json")
    if not path.is_file():
        raise FileNotFoundError(path)
    if path.suffix == ".json":
        return _from_hf_json(path)
    return Tokenizer.from_tiktoken_file(path)


@lru_cache(maxsize=4)
def _cl100k_ranks() -> dict[bytes, int]:
    data = (resources.files("openglm") / "assets" / CL100K_ASSET).read_bytes()
    return parse_rank_file(data)


@lru_cache(maxsize=4)
def default_tokenizer(vocab: int = DEFAULT_VOCAB) -> Tokenizer:
    """Small CPU-sized tokenizer: the first ``vocab - 14`` cl100k ranks + GLM-4's 14 specials.

    Stand-in for the ``nano`` model preset until a trained bilingual tokenizer
    exists: cl100k's low ranks are mostly English/code, so Chinese costs about
    two tokens per character. Splits with GLM-4's regex (cl100k's, with the
    contractions written case-insensitively), so the result is a GLM-4-format
    tokenizer: with the default size, 16370 ranks and specials at 16370..16383.
    Cached: treat the returned object as read-only.
    """
    specials = glm4_special_tokens()
    n = vocab - len(specials)
    if n < 256:
        raise ValueError(f"vocab={vocab} leaves fewer than 256 BPE ranks")
    ranks = {t: r for t, r in _cl100k_ranks().items() if r < n}
    if len(ranks) != n:
        raise ValueError(f"vocab={vocab} exceeds the {len(_cl100k_ranks())} cl100k ranks + specials")
    return Tokenizer(ranks, pat_str=GLM4_PAT_STR, special_tokens=specials, name=f"glm4-cl100k-{vocab}")
