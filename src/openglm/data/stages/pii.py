"""PII scrubbing: e-mail addresses, phone numbers (Chinese mobiles and separated international
numbers) and Chinese resident ID numbers (checksum-verified) become placeholders."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .base import MapStage

EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w])")
CN_ID = re.compile(r"(?<![0-9A-Za-z])[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}"
                   r"[0-9Xx](?![0-9A-Za-z])")
CN_MOBILE = re.compile(r"(?<![\d+])(?:(?:\+|00)?86[ -]?)?1[3-9]\d[ -]?\d{4}[ -]?\d{4}(?!\d)")
# Separators are required: a bare 10-digit run is more often an id or a count than a phone.
INTL_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?![\w])")
_DIGIT = re.compile(r"\d")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def valid_cn_id(number: str) -> bool:
    """GB 11643 check digit (ISO 7064 MOD 11-2)."""
    total = sum(int(d) * w for d, w in zip(number[:17], _ID_WEIGHTS))
    return "10X98765432"[total % 11] == number[17].upper()


@dataclass
class Pii(MapStage):
    email: str = "[EMAIL]"
    phone: str = "[PHONE]"
    id_number: str = "[ID]"

    def __call__(self, row: dict) -> None:
        text = row["text"]
        # Digits are cheap to test for and most documents have no PII at all.
        if "@" in text:
            text, n = EMAIL.subn(self.email, text)
            if n:
                self.note(row, "email")
        if _DIGIT.search(text):
            def scrub_id(m: re.Match) -> str:
                return self.id_number if valid_cn_id(m.group()) else m.group()
            scrubbed = CN_ID.sub(scrub_id, text)
            if scrubbed != text:
                self.note(row, "id_number")
            text, n_mobile = CN_MOBILE.subn(self.phone, scrubbed)
            text, n_intl = INTL_PHONE.subn(self.phone, text)
            if n_mobile or n_intl:
                self.note(row, "phone")
        row["text"] = text
        return None
