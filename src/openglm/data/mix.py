"""Reweighting: per-source (or per-language) sampling rates that produce a target token mixture.

Either ``weights`` (a multiplier per group: 2.0 = two epochs of that source, 0.5 = half of it) or
``target`` (each group's share of the output tokens, with ``total_tokens`` or as many tokens as came
in). A document's multiplicity is floor(rate) plus one more with probability frac(rate), drawn from
a hash of its id, so the choice is the same on every engine and every rerun.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import xxhash

from .stages.base import BarrierStage, Decision, KeyTable


def unit_interval(seed: int, doc_id: str) -> float:
    return xxhash.xxh64_intdigest(doc_id.encode("utf-8"), seed=seed) / 2.0**64


@dataclass
class Mix(BarrierStage):
    weights: dict[str, float] = field(default_factory=dict)
    target: dict[str, float] = field(default_factory=dict)
    total_tokens: int | None = None
    by: str = "source"  # source | lang
    seed: int = 0

    def __post_init__(self):
        super().__post_init__()
        if bool(self.weights) == bool(self.target):
            raise ValueError("mix: give exactly one of 'weights' or 'target'")
        if self.by not in ("source", "lang"):
            raise ValueError(f"mix: 'by' must be source or lang, not {self.by!r}")
        if self.target and not math.isclose(sum(self.target.values()), 1.0, abs_tol=1e-3):
            raise ValueError(f"mix: target shares must sum to 1, got {sum(self.target.values()):.4f}")
        if any(v < 0 for v in {**self.weights, **self.target}.values()):
            raise ValueError("mix: weights and shares must not be negative")

    def rates(self, tokens_by_group: dict[str, int]) -> dict[str, float]:
        if self.weights:
            return {g: float(self.weights.get(g, 1.0)) for g in tokens_by_group}
        total = self.total_tokens or sum(tokens_by_group.values())
        return {g: (self.target.get(g, 0.0) * total / n if n else 0.0) for g, n in tokens_by_group.items()}

    def decide(self, table: KeyTable) -> Decision:
        groups = table.sources if self.by == "source" else table.langs
        tokens_in: dict[str, int] = {}
        for g, n in zip(groups, table.tokens):
            tokens_in[g] = tokens_in.get(g, 0) + n
        missing = set(self.target) - set(tokens_in)
        if missing:
            raise ValueError(f"mix: target names {sorted(missing)}, which no surviving document has as {self.by}")
        rates = self.rates(tokens_in)
        entries, tokens_out = [], dict.fromkeys(tokens_in, 0)
        for ord_, doc_id, g, n in zip(table.ords, table.ids, groups, table.tokens):
            rate = rates[g]
            mult = int(rate) + (unit_interval(self.seed, doc_id) < rate - int(rate))
            tokens_out[g] += mult * n
            if mult != 1:
                entries.append((ord_, mult, "" if mult else ("not_in_mixture" if rate == 0 else "downsampled"), ""))
        total_out = sum(tokens_out.values()) or 1
        summary = {g: {"tokens_in": tokens_in[g], "rate": round(rates[g], 6), "tokens_out": tokens_out[g],
                       "share_out": round(tokens_out[g] / total_out, 6),
                       **({"share_target": self.target.get(g, 0.0)} if self.target else {})}
                   for g in sorted(tokens_in)}
        return Decision.build(entries, {"by": self.by, "groups": summary})
