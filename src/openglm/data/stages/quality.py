"""Heuristic quality filters with per-language rules (Gopher/C4-style for English, character-based
for Chinese, where there are no spaces to split words on)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import regex

from .base import MapStage

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_ALPHA = re.compile(r"[^\W\d_]")
_SPACE = re.compile(r"\s")
_SYMBOL = regex.compile(r"[\p{S}#]")
STATS_CHARS = 100_000  # n-gram statistics look at the head only: cost stays bounded on huge docs


@dataclass
class Rules:
    """One language's thresholds; 0 or an empty dict switches a rule off."""

    min_chars: int = 0
    max_chars: int = 0
    min_words: int = 0
    min_mean_word_len: float = 0.0
    max_mean_word_len: float = 0.0
    min_alpha_words: float = 0.0  # share of words holding a letter
    min_han_ratio: float = 0.0  # share of non-space chars that are Han characters
    max_symbol_ratio: float = 0.0  # share of non-space chars that are symbols (Unicode S*, '#')
    max_dup_lines: float = 0.0  # share of lines repeating an earlier line
    max_dup_line_chars: float = 0.0  # share of chars in such lines
    max_line_chars: int = 0  # longest line (minified code, data dumps)
    units: str = "words"  # n-grams over words or characters (Chinese)
    top_ngram: dict[int, float] = field(default_factory=dict)  # n -> max share of the top n-gram
    dup_ngram: dict[int, float] = field(default_factory=dict)  # n -> max share in repeated n-grams


DEFAULT_RULES = {
    "en": Rules(min_chars=200, max_chars=1_000_000, min_words=30, min_mean_word_len=3, max_mean_word_len=10,
                min_alpha_words=0.7, max_symbol_ratio=0.1, max_dup_lines=0.3, max_dup_line_chars=0.2,
                top_ngram={2: 0.2, 3: 0.18, 4: 0.16}, dup_ngram={5: 0.15, 8: 0.12, 10: 0.10}),
    "zh": Rules(min_chars=100, max_chars=1_000_000, min_han_ratio=0.2, max_symbol_ratio=0.1, max_dup_lines=0.3,
                max_dup_line_chars=0.2, units="chars", top_ngram={3: 0.15, 4: 0.12}, dup_ngram={10: 0.25}),
    "code": Rules(min_chars=100, max_chars=1_000_000, max_line_chars=1000, max_dup_lines=0.6),
    "*": Rules(min_chars=100, max_chars=1_000_000, max_dup_lines=0.3, max_dup_line_chars=0.2),
}


def _ngram_shares(ids: np.ndarray, lengths: np.ndarray, n: int) -> tuple[float, float]:
    """(share of chars covered by the most frequent n-gram, share covered by repeated n-grams);
    ``ids`` identify the units (words or characters), ``lengths`` are their lengths in chars."""
    m = len(ids) - n + 1
    total = int(lengths.sum()) or 1
    if m <= 0:
        return 0.0, 0.0
    h = np.zeros(m, np.uint64)
    for k in range(n):
        h = h * np.uint64(0x100000001B3) + ids[k:k + m]
    _, inverse, counts = np.unique(h, return_inverse=True, return_counts=True)
    per_gram = counts[inverse]
    cum = np.concatenate([[0], np.cumsum(lengths)])
    top = int(np.argmax(per_gram))
    top_share = per_gram[top] * (cum[top + n] - cum[top]) / total if per_gram[top] > 1 else 0.0
    starts = np.flatnonzero(per_gram > 1)
    delta = np.bincount(starts, minlength=len(ids) + 1) - np.bincount(starts + n, minlength=len(ids) + 1)
    covered = np.cumsum(delta)[:len(ids)] > 0
    return float(top_share), float(lengths[covered].sum() / total)


def _units(head: str, words: list[str], kind: str) -> tuple[np.ndarray, np.ndarray]:
    if kind == "words":
        _, ids = np.unique(np.array([w.lower() for w in words]), return_inverse=True)
        return ids.astype(np.uint64), np.array([len(w) for w in words], np.int64)
    chars = np.frombuffer(_SPACE.sub("", head).encode("utf-32-le"), np.uint32)
    return chars.astype(np.uint64), np.ones(len(chars), np.int64)


def check(text: str, rules: Rules) -> str | None:
    """The first rule the text breaks, or None."""
    n_chars = len(text)
    if rules.min_chars and n_chars < rules.min_chars:
        return "too_short"
    if rules.max_chars and n_chars > rules.max_chars:
        return "too_long"
    head = text[:STATS_CHARS]
    lines = [line for line in head.split("\n") if line.strip()]
    if rules.max_line_chars and max(map(len, lines), default=0) > rules.max_line_chars:
        return "long_lines"
    if rules.max_dup_lines or rules.max_dup_line_chars:
        seen: set[str] = set()
        dup_lines = dup_chars = 0
        for line in lines:
            if line in seen:
                dup_lines += 1
                dup_chars += len(line)
            seen.add(line)
        if rules.max_dup_lines and dup_lines > rules.max_dup_lines * max(len(lines), 1):
            return "repeated_lines"
        if rules.max_dup_line_chars and dup_chars > rules.max_dup_line_chars * max(sum(map(len, lines)), 1):
            return "repeated_lines"
    n_ns = max(len(_SPACE.sub("", head)), 1)
    if rules.max_symbol_ratio and len(_SYMBOL.findall(head)) > rules.max_symbol_ratio * n_ns:
        return "symbols"
    if rules.min_han_ratio and len(_HAN.findall(head)) < rules.min_han_ratio * n_ns:
        return "few_han_chars"
    words = head.split()
    if rules.min_words and len(words) < rules.min_words:
        return "too_few_words"
    if words and (rules.min_mean_word_len or rules.max_mean_word_len):
        mean = sum(map(len, words)) / len(words)
        if mean < rules.min_mean_word_len or (rules.max_mean_word_len and mean > rules.max_mean_word_len):
            return "word_length"
    if rules.min_alpha_words and sum(1 for w in words if _ALPHA.search(w)) < rules.min_alpha_words * len(words):
        return "few_alpha_words"
    if rules.top_ngram or rules.dup_ngram:
        ids, lengths = _units(head, words, rules.units)
        for n in sorted(set(rules.top_ngram) | set(rules.dup_ngram)):
            top_share, dup_share = _ngram_shares(ids, lengths, n)
            if n in rules.top_ngram and top_share > rules.top_ngram[n]:
                return "repeated_ngrams"
            if n in rules.dup_ngram and dup_share > rules.dup_ngram[n]:
                return "repeated_ngrams"
    return None


def merge_rules(base: Rules, overrides: dict) -> Rules:
    known = {f.name for f in fields(Rules)}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"quality: unknown rule(s) {sorted(unknown)}; known: {sorted(known)}")
    merged = asdict(base) | overrides
    for key in ("top_ngram", "dup_ngram"):
        merged[key] = {int(n): float(v) for n, v in merged[key].items()}
    return Rules(**merged)


@dataclass
class Quality(MapStage):
    """Per-language rules: ``rules: {zh: {min_chars: 50}, en: {...}}`` overrides the defaults;
    languages without rules of their own use ``"*"``."""

    rules: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self):
        super().__post_init__()
        self._rules = {lang: merge_rules(DEFAULT_RULES.get(lang, DEFAULT_RULES["*"]), over)
                       for lang, over in self.rules.items()}

    def rules_for(self, lang: str) -> Rules:
        if not hasattr(self, "_rules"):  # rebuilt after unpickling in a worker
            self.__post_init__()
        return self._rules.get(lang) or DEFAULT_RULES.get(lang) or self._rules.get("*") or DEFAULT_RULES["*"]

    def __call__(self, row: dict) -> str | None:
        return check(row["text"], self.rules_for(row["lang"]))
