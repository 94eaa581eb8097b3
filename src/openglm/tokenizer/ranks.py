"""tiktoken rank files (one "base64(token_bytes) rank" pair per line) and the pad token name.

Shared by the tokenizer (core) and its Hugging Face export (hf) without either importing the other.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path

PAD_TOKEN = "<|endoftext|>"


def parse_rank_file(data: bytes | str) -> dict[bytes, int]:
    """Parse the contents of a tiktoken rank file into ``{token_bytes: rank}``."""
    if isinstance(data, str):
        data = data.encode("ascii")
    ranks: dict[bytes, int] = {}
    for lineno, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            tok, rank = line.split()
            ranks[base64.b64decode(tok, validate=True)] = int(rank)
        except ValueError as e:  # binascii.Error is a ValueError too
            raise ValueError(f"bad rank file line {lineno}: {line[:80]!r}") from e
    return ranks


def read_rank_file(path: str | Path) -> dict[bytes, int]:
    return parse_rank_file(Path(path).read_bytes())


def write_rank_file(path: str | Path, ranks: Mapping[bytes, int]) -> None:
    lines = [
        f"{base64.b64encode(tok).decode('ascii')} {rank}\n"
        for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1])
    ]
    Path(path).write_text("".join(lines), encoding="ascii")
