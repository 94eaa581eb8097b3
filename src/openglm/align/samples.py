"""What self-critique and Self-Contrast share: reading prompts, sampling replies in batches,
writing JSONL, and counting where every input went."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from openglm.chat import normalize_messages
from openglm.infer import Sampling, generate_ids
from openglm.infer.generate import encode_prompt

ASSISTANT = "<|assistant|>"


def read_jsonl(path: str | Path) -> Iterator[tuple[str, dict]]:
    """(``file:line``, record) for each non-empty line; a line that is not a JSON object raises
    ValueError naming it."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                record = json.loads(line)
            except ValueError as e:
                raise ValueError(f"{where}: not JSON ({e})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
            yield where, record


def messages_of(record: dict, where: str) -> list[dict]:
    """The record's ``messages``, checked and in the official dict form."""
    if "messages" not in record:
        raise ValueError(f"{where}: no 'messages' key (keys: {sorted(record)})")
    try:
        return [m.to_dict() for m in normalize_messages(record["messages"])]
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def reply_messages(tok, ids: list[int]) -> list[dict]:
    """Generated ids (stop token removed) -> the assistant turn as messages, one per segment
    (``<|assistant|>`` separates the calls of one turn); [] when nothing but whitespace was written."""
    sep = tok.token_id(ASSISTANT)
    pieces, piece = [], []
    for i in ids + [sep]:
        if i == sep:
            pieces.append(tok.decode(piece, skip_special=True))
            piece = []
        else:
            piece.append(i)
    out = []
    for text in pieces:
        # as openglm.chat.parse_assistant reads a segment: without a metadata line it is plain text
        metadata, body = text.split("\n", 1) if "\n" in text else ("", text)
        if metadata.strip() or body.strip():
            out.append({"role": "assistant", "metadata": metadata.strip(), "content": body})
    return out


def reply_text(reply: list[dict]) -> str:
    """A reply in GLM-4 turn form (``metadata\\ncontent`` segments joined by ``<|assistant|>``)."""
    return ASSISTANT.join(f"{m.get('metadata', '')}\n{m.get('content', '')}" for m in reply)


def one_or_list(reply: list[dict]) -> dict | list[dict]:
    """A DPO reply: the message itself when the turn is one segment."""
    return reply[0] if len(reply) == 1 else reply


def sample_replies(model, tok, prompt: list[dict], tools: list | None, n: int, max_new_tokens: int,
                   sampling: Sampling) -> list[list[dict]]:
    """``n`` replies to one prompt, sampled as one batch of ``n`` rows. Raises ContextLengthError
    when the prompt leaves no room to answer."""
    ids = encode_prompt(tok, prompt, tools)
    return [reply_messages(tok, row) for row in generate_rows(model, tok, [ids] * n, max_new_tokens, sampling)]


def generate_rows(model, tok, prompts: list[list[int]], max_new_tokens: int, sampling: Sampling) -> list[list[int]]:
    """Each prompt's generated ids, the stop token left out (a row yields None once it stopped)."""
    stops = set(tok.stop_ids)
    rows: list[list[int]] = [[] for _ in prompts]
    for step in generate_ids(model, prompts, max_new_tokens, sampling, sorted(stops), tok.pad_id):
        for row, token in zip(rows, step):
            if token is not None and token not in stops:
                row.append(token)
    return rows


@dataclass
class Tally:
    """Where the inputs went for one output: kept, or dropped with a reason (nothing uncounted)."""

    kept: int = 0
    dropped: Counter = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return self.kept + sum(self.dropped.values())

    def to_dict(self) -> dict:
        return {"kept": self.kept, "dropped": dict(sorted(self.dropped.items()))}

    def line(self, name: str, kept: str = "kept") -> str:
        why = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.dropped.items()))
        return f"{name}: {self.kept} {kept}, {sum(self.dropped.values())} dropped" + (f" ({why})" if why else "")
