"""Unicode and whitespace normalisation, optional Traditional -> Simplified Chinese (OpenCC)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from .base import MapStage

# NFKC maps fullwidth ASCII to ASCII: right for letters and digits (１９９８ -> 1998) but wrong for
# Chinese punctuation (，！？：；（）), which Chinese text and GLM's vocabulary use as is.
_CJK_PUNCT = "".join(chr(c) for c in range(0xFF01, 0xFF5F) if not chr(c).isalnum())
_CJK_PUNCT_SPLIT = re.compile(f"([{re.escape(_CJK_PUNCT)}]+)")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\ufeff]")
_ODD_SPACE = re.compile(r"[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_MANY_NEWLINES = re.compile(r"\n{3,}")


def nfkc_keep_cjk_punct(text: str) -> str:
    parts = _CJK_PUNCT_SPLIT.split(text)
    # Odd indices are the captured punctuation runs, kept verbatim.
    return "".join(p if i % 2 else unicodedata.normalize("NFKC", p) for i, p in enumerate(parts))


def normalize_whitespace(text: str) -> str:
    """Unify line ends and odd spaces, drop control/zero-width chars, trailing blanks and runs of
    blank lines. Inner runs of spaces stay: they are indentation in code."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    text = _ODD_SPACE.sub(" ", text)
    text = _TRAILING_SPACE.sub("\n", text + "\n")
    return _MANY_NEWLINES.sub("\n\n", text).strip("\n")


class T2S:
    """OpenCC's t2s, run only on texts holding a character it would change: converting everything
    costs more than the rest of the pipeline together, and most Chinese text is Simplified already."""

    def __init__(self):
        self.converter = _opencc_t2s()
        han = "".join(chr(c) for r in ((0x3400, 0x4DC0), (0x4E00, 0xA000), (0xF900, 0xFB00)) for c in range(*r))
        self.traditional = frozenset(c for c in han if self.converter.convert(c) != c)

    def convert(self, text: str) -> str:
        return text if self.traditional.isdisjoint(text) else self.converter.convert(text)


def _opencc_t2s():
    try:
        from opencc import OpenCC
    except ImportError as e:
        raise RuntimeError("normalize: t2s needs OpenCC (pip install opencc-python-reimplemented)") from e
    try:
        return OpenCC("t2s")  # opencc-python-reimplemented
    except Exception:
        return OpenCC("t2s.json")  # the C++ binding names its configs by file


@dataclass
class Normalize(MapStage):
    """NFKC (keeping Chinese fullwidth punctuation), whitespace clean-up, optional T->S."""

    form: str = "NFKC"  # NFKC | NFC | none
    keep_cjk_punct: bool = True
    t2s: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.form not in ("NFKC", "NFC", "none"):
            raise ValueError(f"normalize: form must be NFKC, NFC or none, not {self.form!r}")

    def __call__(self, row: dict) -> str | None:
        text = original = row["text"]
        if self.form != "none" and not unicodedata.is_normalized(self.form, text):
            text = nfkc_keep_cjk_punct(text) if self.form == "NFKC" and self.keep_cjk_punct \
                else unicodedata.normalize(self.form, text)
            if text != original:
                self.note(row, "unicode")
        spaced = normalize_whitespace(text)
        if spaced != text:
            self.note(row, "whitespace")
        text = spaced
        if self.t2s:
            converter = getattr(self, "_t2s", None) or T2S()
            self._t2s = converter
            simplified = converter.convert(text)
            if simplified != text:
                self.note(row, "t2s")
                text = simplified
        row["text"] = text
        return None if text.strip() else "empty_after_normalize"
