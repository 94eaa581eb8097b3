"""Constrained decoding: a reply may only open with one of a few fixed strings.

GLM-4 writes a tool call as `<|assistant|>{name}\\n{arguments}` and a text reply as
`<|assistant|>\\n{text}`. Allowing only "\\n" and the offered tools' "{name}\\n" at the start of
each segment means a model can never call a tool it was not given (what a small model does
most when it errs: `python` in a greeting, BENCHMARKS.md), the guarantee OpenAI-style servers
give with their tool lists. Past the opening the model writes freely.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache

import torch

from openglm.chat import tool_name


def tool_names(specs: Iterable[dict]) -> list[str]:
    """The names tool specs are called by (chat.tool_name of each)."""
    return [tool_name(s) for s in specs]


@lru_cache(maxsize=4)
def token_pieces(tok) -> tuple[bytes | None, ...]:
    """Every id's bytes (None for special tokens), once per tokenizer."""
    return tuple(None if tok.is_special(i) else tok.token_bytes(i) for i in range(tok.vocab_size))


@lru_cache(maxsize=256)
def _allowed(tok, openings: tuple[bytes, ...], written: bytes) -> torch.Tensor:
    """Ids whose bytes keep `written` on the way to an opening or complete one. Cached: it is a
    pass over the whole vocabulary, and a segment's start is the same state every turn."""
    def ok(piece: bytes | None) -> bool:
        if piece is None:
            return False
        text = written + piece
        return any(o.startswith(text) or text.startswith(o) for o in openings)

    return torch.tensor([ok(p) for p in token_pieces(tok)], dtype=torch.bool)


class ReplyOpening:
    """Masks the logits so each segment opens with one of `openings` (byte-exact, across tokens).

    A segment starts at the beginning and after every `restart_id` token (GLM-4's second
    <|assistant|> between the calls of one turn). Special tokens cannot open a segment.
    """

    def __init__(self, tok, openings: Sequence[str], restart_id: int | None = None):
        if not openings:
            raise ValueError("ReplyOpening needs at least one allowed opening")
        self.openings = tuple(o.encode("utf-8") for o in openings)
        self.restart_id = restart_id
        self.tok, self.pieces = tok, token_pieces(tok)
        self.written: bytes | None = b""  # the open segment's bytes; None once an opening is complete

    def mask(self, vocab: int, device) -> torch.Tensor | None:
        """Boolean [vocab] of allowed next ids, or None when decoding is free."""
        if self.written is None:
            return None
        allowed = _allowed(self.tok, self.openings, self.written)[:vocab]
        if len(allowed) < vocab:  # embedding rows past the tokenizer's ids are never allowed
            allowed = torch.cat((allowed, torch.zeros(vocab - len(allowed), dtype=torch.bool)))
        return allowed.to(device)

    def push(self, token_id: int) -> None:
        """Record a generated id."""
        if token_id == self.restart_id:
            self.written = b""
        elif self.written is not None:
            self.written += self.pieces[token_id] or b""
            if any(self.written.startswith(o) for o in self.openings):
                self.written = None
