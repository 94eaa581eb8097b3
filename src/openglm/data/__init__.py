"""Bilingual (Chinese-English) pretraining data pipeline: read, clean, dedup, mix, tokenize, pack.

    from openglm.data import run_recipe, load_sample, TokenShards
    report = run_recipe("recipe.yaml", engine="local")        # or engine="ray"

Names load lazily, so ``import openglm.data.<module>`` stays cheap.
"""

from importlib import import_module

_EXPORTS = {
    "run_recipe": "run", "load_recipe": "recipe", "load_sample": "corpus", "sample_recipe_path": "corpus",
    "TokenShards": "pack", "MinHasher": "dedup", "InputSpec": "readers",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'openglm.data' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
