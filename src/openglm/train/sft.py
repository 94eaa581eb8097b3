"""Supervised fine-tuning data: the official GLM-4 format, assistant-only labels, packing.

Input: JSONL, one ``{"messages": [...]}`` per line (roles system/user/assistant/observation,
``tools`` on a system message, tool calls as assistant ``metadata``), as in GLM-4's
fine-tuning demo. A conversation is rendered with :func:`openglm.chat.render_segments`
(no generation prompt) and ``<|user|>`` is appended, as the official demo does: GLM-4 has no
end-of-turn token, so the model learns to end a reply by predicting the next role token.

Labels: the position of a token whose role is ``assistant`` predicts the next token. So
every token of an assistant turn after its ``<|assistant|>`` role token is a target
(metadata line, tool-call body or answer) and so is the token that ends the turn
(``<|user|>``, ``<|observation|>`` or the next ``<|assistant|>``); system, user and
observation tokens and the ``<|assistant|>`` role token itself (the prompt supplies it at
inference) are never targets. This equals the official demo's shifted loss mask.

Packing puts several conversations in one row; each keeps its own positions (from 0) and
attends only within itself (the model runs attention document by document). LongAlign's loss weighting
("sequence": every conversation counts equally, however long) and sorted batching are
options.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..chat import normalize_messages, render_segments
from .objectives import IGNORE

TURN_END = "<|user|>"


@dataclass
class Example:
    """Token ids and per-position targets (-100 = no loss) of one conversation."""

    ids: np.ndarray
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_targets(self) -> int:
        return int((self.targets != IGNORE).sum())


@dataclass
class LoadReport:
    """What happened to every input line (nothing is dropped without being counted)."""

    lines: int = 0
    kept: int = 0
    invalid: int = 0
    truncated: int = 0
    no_targets: int = 0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.lines} lines: {self.kept} kept, {self.invalid} invalid, {self.no_targets} without "
                f"assistant tokens (skipped), {self.truncated} truncated to seq_len")


def encode_conversation(tokenizer, messages, tools=None, train_from: int = 0) -> Example:
    """Ids and assistant-only targets; positions before ``train_from`` get no targets.
    ``tools`` (optional) is a tool list not carried by a system message."""
    segments = render_segments(messages, tools=tools, add_generation_prompt=False)
    ids, roles = tokenizer.encode_segments(segments, return_roles=True)
    ids.append(tokenizer.token_id(TURN_END))
    roles.append(None)
    ids_arr = np.asarray(ids, dtype=np.int64)
    targets = np.full(len(ids), IGNORE, dtype=np.int64)
    assistant = np.array([r == "assistant" for r in roles[:-1]], dtype=bool)
    assistant[:train_from] = False
    targets[:-1][assistant] = ids_arr[1:][assistant]
    return Example(ids_arr, targets)


def read_jsonl(path: str | Path, report: LoadReport, skip_invalid: bool):
    """Yield (where, record) for each non-empty line; malformed lines raise or are counted."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            report.lines += 1
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError(f"expected a JSON object, got {type(record).__name__}")
            except ValueError as e:
                _reject(report, f"{path}:{n}: {e}", skip_invalid)
                continue
            yield f"{path}:{n}", record


def _reject(report: LoadReport, message: str, skip_invalid: bool) -> None:
    if not skip_invalid:
        raise ValueError(f"{message} (set skip_invalid to count and skip such lines)")
    report.invalid += 1
    if len(report.errors) < 5:
        report.errors.append(message)


def load_conversations(paths: Sequence[str | Path], tokenizer, seq_len: int,
                       skip_invalid: bool = False) -> tuple[list[Example], LoadReport]:
    """Read SFT JSONL files into Examples of at most ``seq_len`` tokens."""
    report, examples = LoadReport(), []
    for path in paths:
        for where, record in read_jsonl(path, report, skip_invalid):
            try:
                if "messages" not in record:
                    raise ValueError(f"no 'messages' key (keys: {sorted(record)})")
                ex = encode_conversation(tokenizer, normalize_messages(record["messages"]), record.get("tools"))
            except (ValueError, KeyError, TypeError) as e:
                _reject(report, f"{where}: {e}", skip_invalid)
                continue
            _keep(ex, seq_len, report, examples)
    if not examples:
        raise ValueError(f"no usable conversations in {', '.join(map(str, paths))}: {report.summary()}")
    return examples, report


def _keep(ex: Example, seq_len: int, report: LoadReport, out: list) -> None:
    if len(ex) > seq_len:
        report.truncated += 1
        ex = Example(ex.ids[:seq_len], np.append(ex.targets[:seq_len - 1], IGNORE))
    if ex.n_targets == 0:
        report.no_targets += 1
        return
    report.kept += 1
    out.append(ex)


def pack(lengths: Sequence[int], order: Sequence[int], seq_len: int) -> list[list[int]]:
    """Greedy packing in the given order: rows of example indices, each row <= seq_len tokens."""
    rows, row, used = [], [], 0
    for i in order:
        if row and used + lengths[i] > seq_len:
            rows.append(row)
            row, used = [], 0
        row.append(i)
        used += lengths[i]
    if row:
        rows.append(row)
    return rows


def row_plan(lengths: Sequence[int], seq_len: int, global_batch: int, seed: int,
             packing: bool, sorted_batching: bool):
    """epoch -> global batches of rows (a row = a list of example indices)."""
    def plan(epoch: int) -> list[list[list[int]]]:
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(lengths)).tolist()
        rows = pack(lengths, order, seq_len) if packing else [[i] for i in order]
        if sorted_batching:
            rows.sort(key=lambda r: sum(lengths[i] for i in r))
        batches = [rows[i:i + global_batch] for i in range(0, len(rows), global_batch)]
        if sorted_batching:  # similar lengths within a batch, batches in random order
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches
    return plan


def collate_rows(rows: list[list[Example] | None], pad_id: int, weighting: str = "token") -> dict:
    """Rows of examples -> a batch with document ids: each token attends causally within its own
    conversation, whose positions start at 0 (the model derives both from ``doc_ids``; padding,
    id -1, is one more run).

    ``weighting="token"`` weighs every target 1 (the mean over all targets of the step);
    ``"sequence"`` weighs a conversation's targets 1/n_targets, so each conversation adds 1
    to the normaliser and the loss is the mean of per-conversation means (LongAlign).
    """
    T = max([sum(len(ex) for ex in row) for row in rows if row] + [1])
    B = len(rows)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    targets = torch.full((B, T), IGNORE, dtype=torch.long)
    docs = torch.full((B, T), -1, dtype=torch.long)
    weights = torch.zeros(B, T)
    for b, row in enumerate(rows or []):
        at = 0
        for d, ex in enumerate(row or []):
            n = len(ex)
            ids[b, at:at + n] = torch.from_numpy(ex.ids)
            targets[b, at:at + n] = torch.from_numpy(ex.targets)
            docs[b, at:at + n] = d
            has = targets[b, at:at + n] != IGNORE
            weights[b, at:at + n] = has.float() / (ex.n_targets if weighting == "sequence" else 1)
            at += n
    return {"input_ids": ids, "targets": targets, "doc_ids": docs, "loss_weights": weights}
