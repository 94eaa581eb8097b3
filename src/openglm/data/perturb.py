"""Planted near-duplicates, for measuring a dedup setup (tests, benchmark, your own tuning).

Chinese is edited per character, English and code per whitespace-separated word, as a copy-editor
or a scraper's template would: substitutions, insertions and deletions at random positions.
"""

from __future__ import annotations

import random
import re

_HAN = re.compile(r"[\u4e00-\u9fff]")


def edit_chars(text: str, rate: float, rng: random.Random) -> str:
    """Edit about ``rate`` of the characters (Han text); replacements come from the same text."""
    chars = list(text)
    pool = _HAN.findall(text) or chars
    for _ in range(max(1, round(rate * len(chars)))):
        i = rng.randrange(len(chars))
        op = rng.random()
        if op < 0.5:
            chars[i] = rng.choice(pool)
        elif op < 0.75:
            chars.insert(i, rng.choice(pool))
        elif len(chars) > 1:
            del chars[i]
    return "".join(chars)


def edit_words(text: str, rate: float, rng: random.Random) -> str:
    """Edit about ``rate`` of the words, keeping the whitespace (and so code layout) around them."""
    parts = re.split(r"(\s+)", text)
    word_idx = [i for i, p in enumerate(parts) if p and not p.isspace()]
    if not word_idx:
        return text
    pool = [parts[i] for i in word_idx]
    for i in rng.sample(word_idx, max(1, min(len(word_idx), round(rate * len(word_idx))))):
        op = rng.random()
        if op < 0.5:
            parts[i] = rng.choice(pool)
        elif op < 0.75:
            parts[i] = f"{parts[i]} {rng.choice(pool)}"
        else:
            parts[i] = ""
    return "".join(parts)


def near_duplicate(text: str, lang: str, rate: float = 0.05, seed: int = 0) -> str:
    rng = random.Random(seed)
    return edit_chars(text, rate, rng) if lang == "zh" else edit_words(text, rate, rng)


def plant(docs: list[dict], fraction: float = 0.3, rate: float = 0.05, seed: int = 0) -> tuple[list[dict], set]:
    """Append an edited copy of a ``fraction`` of the documents (each needs ``id``, ``text``,
    ``lang``). Returns the new list (originals first) and the planted ``(original_id, copy_id)`` pairs."""
    rng = random.Random(seed)
    chosen = rng.sample(range(len(docs)), round(fraction * len(docs)))
    copies, pairs = [], set()
    for k, i in enumerate(sorted(chosen)):
        doc = docs[i]
        copy = dict(doc, id=f"{doc['id']}#dup", text=near_duplicate(doc["text"], doc["lang"], rate, seed + k))
        copies.append(copy)
        pairs.add((doc["id"], copy["id"]))
    return list(docs) + copies, pairs
