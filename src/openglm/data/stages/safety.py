"""Word-list safety filter: rejects documents that use several listed terms (porn/gambling spam
and the like). The built-in lists are deliberately short; pass your own with ``wordlists``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .base import MapStage

DEFAULT_TERMS = {
    "en": ["porn", "porno", "pornography", "xxx videos", "hardcore sex", "escort service", "online casino",
           "casino bonus", "sex cam", "nude pics", "viagra", "buy cialis", "hentai", "milf"],
    "zh": ["色情", "黄色网站", "成人影片", "裸聊", "约炮", "一夜情", "赌博网站", "网络赌场", "博彩", "六合彩", "时时彩",
           "百家乐", "代开发票", "办证", "枪支出售", "迷药", "春药"],
}


def compile_terms(terms: list[str]) -> re.Pattern:
    """Latin terms match whole words; Chinese terms match anywhere (there are no word breaks)."""
    def one(term: str) -> str:
        escaped = re.escape(term)
        return rf"\b{escaped}\b" if term.isascii() else escaped
    return re.compile("|".join(one(t) for t in sorted(set(terms), key=len, reverse=True)), re.IGNORECASE)


@dataclass
class Safety(MapStage):
    min_hits: int = 2  # one stray word is usually innocent; several are spam
    wordlists: list[str] = field(default_factory=list)  # extra files, one term per line
    builtin: bool = True

    def pattern(self) -> re.Pattern:
        pattern = getattr(self, "_pattern", None)
        if pattern is None:
            terms = [t for lst in DEFAULT_TERMS.values() for t in lst] if self.builtin else []
            for path in self.wordlists:
                terms += [t.strip() for t in Path(path).read_text(encoding="utf-8").splitlines() if t.strip()]
            if not terms:
                raise ValueError("safety: no terms (builtin: false and no wordlists)")
            pattern = self._pattern = compile_terms(terms)
        return pattern

    def __call__(self, row: dict) -> tuple[str, str] | None:
        hits = self.pattern().findall(row["text"])
        if len(hits) >= self.min_hits:
            return "unsafe_words", ", ".join(sorted({h.lower() for h in hits})[:5])
        return None
