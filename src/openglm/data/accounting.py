"""Per-stage accounting: every input record ends either rejected by exactly one stage or kept.

Counting each document once, at its fate, makes ``kept + rejected == input`` hold for every stage by
construction of the figures, and the rejects files (one line per reject) let a test or a user check
the figures independently.
"""

from __future__ import annotations

from collections import Counter

KEPT = "<kept>"


def _key(*parts: str) -> str:
    return "\t".join(parts)


class Accounting:
    def __init__(self, stages: list[str]):
        self.stages = stages  # "read" first, then the recipe's stages except pack
        self.docs: Counter = Counter()  # (fate stage, lang) -> documents
        self.tokens: Counter = Counter()
        self.reasons: Counter = Counter()  # (stage, reason) -> documents
        self.edits: Counter = Counter()  # "stage/what" -> documents changed

    def _fate(self, fate: str, row: dict) -> None:
        lang = row["lang"] or "und"
        self.docs[_key(fate, lang)] += 1
        self.tokens[_key(fate, lang)] += row["_tokens"]
        for edit in row["_edits"].split():
            self.edits[edit] += 1

    def rejected(self, row: dict) -> None:
        self._fate(row["_stage"], row)
        self.reasons[_key(row["_stage"], row["_reason"])] += 1

    def kept(self, row: dict) -> None:
        self._fate(KEPT, row)

    def state(self) -> dict:
        return {"docs": dict(self.docs), "tokens": dict(self.tokens), "reasons": dict(self.reasons),
                "edits": dict(self.edits)}

    def restore(self, state: dict) -> None:
        for name in ("docs", "tokens", "reasons", "edits"):
            setattr(self, name, Counter(state[name]))

    def rejected_at(self, stage: str) -> int:
        return sum(n for k, n in self.reasons.items() if k.split("\t")[0] == stage)

    def table(self) -> list[dict]:
        """One entry per stage: input, kept, rejected (by reason), edits, kept docs/tokens by language."""
        order = {s: i for i, s in enumerate(self.stages)} | {KEPT: len(self.stages)}

        def kept_by_lang(counter: Counter, after: int) -> dict[str, int]:
            """What no stage up to index ``after`` rejected: fates later than it."""
            out: Counter = Counter()
            for k, n in counter.items():
                fate, lang = k.split("\t")
                if order[fate] > after:
                    out[lang] += n
            return dict(sorted(out.items()))

        rows = []
        for i, stage in enumerate(self.stages):
            docs_kept, tokens_kept = kept_by_lang(self.docs, i), kept_by_lang(self.tokens, i)
            reasons = {k.split("\t")[1]: n for k, n in sorted(self.reasons.items()) if k.split("\t")[0] == stage}
            kept = sum(docs_kept.values())
            rejected = sum(reasons.values())
            rows.append({"stage": stage, "input": kept + rejected, "kept": kept, "rejected": rejected,
                         "reasons": reasons,
                         "edits": {k.split("/", 1)[1]: n for k, n in sorted(self.edits.items())
                                   if k.split("/", 1)[0] == stage},
                         "docs_by_lang": docs_kept, "tokens_by_lang": tokens_kept})
        return rows
