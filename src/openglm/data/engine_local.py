"""The local engine: workers' functions run in this process, in input order."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from .readers import Unit


class LocalEngine:
    name = "local"

    def map(self, units: list[Unit], fn: Callable[..., Iterator[list[dict]]], schema=None,
            **kwargs) -> Iterator[list[dict]]:
        """``fn``'s batches for each unit in turn (``schema`` matters only where rows cross processes)."""
        for unit in units:
            yield from fn(unit, **kwargs)

    def close(self) -> None:
        pass
