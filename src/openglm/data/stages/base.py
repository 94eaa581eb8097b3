"""Stage kinds: per-document map stages and barrier stages that need a full pass to decide.

A map stage sees one row, may edit it in place, and returns ``None`` (keep) or a reject reason.
A barrier stage (dedup, mixing) computes a small ``key`` per document in the workers, then
``decide`` runs once on the driver over all keys and says how often each document survives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..records import note_edit


@dataclass
class Stage:
    name: str = ""
    kind: ClassVar[str] = "map"

    def __post_init__(self):
        self.name = self.name or type(self).type_name()

    @classmethod
    def type_name(cls) -> str:
        return "".join("_" + c.lower() if c.isupper() else c for c in cls.__name__).lstrip("_")

    def __getstate__(self):
        # Loaded models/tables (attributes starting with "_") are rebuilt in each worker.
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


class MapStage(Stage):
    def __call__(self, row: dict) -> str | tuple[str, str] | None:
        """None keeps the row; a reason (or a (reason, detail) pair) rejects it."""
        raise NotImplementedError

    def note(self, row: dict, what: str) -> None:
        note_edit(row, self.name, what)


@dataclass
class KeyTable:
    """What a barrier collected on the driver, one entry per surviving document, in ``_ord`` order."""

    ords: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    langs: list[str] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    keys: list[bytes] = field(default_factory=list)

    def add(self, row: dict) -> None:
        self.ords.append(row["_ord"])
        self.ids.append(row["id"])
        self.sources.append(row["source"])
        self.langs.append(row["lang"])
        self.tokens.append(row["_tokens"])
        self.keys.append(row["_key"])


@dataclass
class Decision:
    """Documents whose multiplicity is not 1: 0 = rejected (with reason/detail), k > 1 = repeated."""

    ords: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    mult: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    reasons: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    summary: dict = field(default_factory=dict)  # figures for the report (clusters, achieved mixture)

    @classmethod
    def build(cls, entries: list[tuple[int, int, str, str]], summary: dict | None = None) -> Decision:
        entries = sorted(entries)
        return cls(np.array([e[0] for e in entries], np.int64), np.array([e[1] for e in entries], np.int64),
                   [e[2] for e in entries], [e[3] for e in entries], summary or {})

    def lookup(self, ord_: int) -> tuple[int, str, str]:
        i = int(np.searchsorted(self.ords, ord_))
        if i < len(self.ords) and self.ords[i] == ord_:
            return int(self.mult[i]), self.reasons[i], self.details[i]
        return 1, "", ""

    def save(self, path: Path) -> None:
        np.savez(path, ords=self.ords, mult=self.mult, reasons=np.array(self.reasons, dtype=str),
                 details=np.array(self.details, dtype=str))

    @classmethod
    def load(cls, path: Path, summary: dict) -> Decision:
        with np.load(path) as z:
            return cls(z["ords"], z["mult"], z["reasons"].tolist(), z["details"].tolist(), summary)


class BarrierStage(Stage):
    kind: ClassVar[str] = "barrier"

    def key(self, row: dict) -> bytes:
        return b""

    def decide(self, table: KeyTable) -> Decision:
        raise NotImplementedError
