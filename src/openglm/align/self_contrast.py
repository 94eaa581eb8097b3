"""Self-Contrast (Liu et al. 2024): feedback-free negatives for DPO, sampled from the model itself.

For every prompt of an SFT file the model answers K times; a sample is a negative when it is
wrong (its tool calls differ from the target's, or, for a plain reply, its text does) and
dissimilar to the target (similarity < ``max_similarity``): a sample close to the target may
say the same thing in other words, so it is not used. Up to ``pairs_per_prompt`` negatives
per prompt, most dissimilar first, become ``{"messages", "chosen": target, "rejected": sample}``.
"""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from openglm.chat import parse_assistant
from openglm.infer import ContextLengthError, Sampling

from .samples import Tally, messages_of, one_or_list, read_jsonl, reply_text, sample_replies

# CJK characters one by one (Chinese has no spaces), other words whole, punctuation one by one
_TOKEN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[^\W\u3400-\u9fff\uf900-\ufaff]+|[^\w\s]")


def exact_similarity(a: str, b: str) -> float:
    return float(a == b)


def char_similarity(a: str, b: str) -> float:
    """difflib's ratio: 2 x matched characters / total characters."""
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def token_similarity(a: str, b: str) -> float:
    """Jaccard index of the two texts' token sets (two empty texts: 1)."""
    x, y = set(_TOKEN.findall(a)), set(_TOKEN.findall(b))
    return len(x & y) / len(x | y) if x | y else 1.0


SIMILARITIES: dict[str, Callable[[str, str], float]] = {
    "exact": exact_similarity, "chars": char_similarity, "tokens": token_similarity}

# why a prompt gave no pair
ALL_MATCHED = "every sample matched the target"
ALL_SIMILAR = "every wrong sample too similar"
ALL_EMPTY = "every sample empty"
TOO_LONG = "prompt longer than the model's context"

SAMPLING = Sampling(1.0, top_p=0.95, seed=0)  # varied enough to go wrong in several ways


@dataclass
class Item:
    """One prompt and the reply it should get."""

    where: str
    prompt: list[dict]
    target: dict
    tools: list | None = None


def read_item(record: dict, where: str) -> Item:
    """The prompt runs to the last user message; the target is the first assistant turn after it."""
    messages = messages_of(record, where)
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        raise ValueError(f"{where}: no user message")
    target = next((m for m in messages[users[-1] + 1:] if m["role"] == "assistant"), None)
    if target is None:
        raise ValueError(f"{where}: no assistant reply after the last user message to contrast against")
    if not (target["metadata"].strip() or target["content"].strip()):
        raise ValueError(f"{where}: the target reply is empty")
    return Item(where, messages[: users[-1] + 1], target, record.get("tools"))


def read_items(path) -> list[Item]:
    return [read_item(record, where) for where, record in read_jsonl(path)]


def canonical(turn: str) -> tuple[list | None, str, str]:
    """(calls, text, comparable string) of a reply in GLM-4 turn form; calls are None when one
    failed to parse. The string writes calls as ``name\\narguments`` (JSON keys sorted), so two
    spellings of one call compare equal."""
    parsed = parse_assistant(turn, allow_multiple=True)
    text = parsed.content.strip()
    if parsed.error:
        return None, text, turn.strip()
    shown = [c.arguments if isinstance(c.arguments, str) else json.dumps(c.arguments, ensure_ascii=False,
                                                                          sort_keys=True)
             for c in parsed.tool_calls]
    calls = "\n".join(f"{c.name}\n{args}" for c, args in zip(parsed.tool_calls, shown))
    return parsed.tool_calls, text, "\n".join(p for p in (calls, text) if p)


def is_wrong(want: tuple, got: tuple) -> bool:
    """Whether a sample is not the target's answer (both as :func:`canonical` reads them): a call
    that does not parse, other calls, or (the target calls nothing) other text."""
    if got[0] is None or got[0] != want[0]:
        return True
    return not want[0] and got[1] != want[1]


@dataclass
class ContrastReport:
    """prompts = with_pairs + every dropped reason; samples are counted by what they turned out to be."""

    samples: int = 0
    similarity: str = "chars"
    max_similarity: float = 0.9
    pairs: int = 0
    prompts: Tally = field(default_factory=Tally)
    outcomes: Counter = field(default_factory=lambda: Counter(dict.fromkeys(
        ("empty", "matched", "too_similar", "negative", "duplicate", "unused"), 0)))

    def to_dict(self) -> dict:
        return {"prompts": self.prompts.total, "with_pairs": self.prompts.kept,
                "without_pairs": dict(sorted(self.prompts.dropped.items())), "pairs": self.pairs,
                "samples_per_prompt": self.samples, "similarity": self.similarity,
                "max_similarity": self.max_similarity, "samples": dict(self.outcomes)}

    def summary(self) -> str:
        o = self.outcomes
        return "\n".join([
            f"self-contrast: {self.prompts.total} prompts, {self.samples} samples each, {self.similarity} similarity "
            f"< {self.max_similarity}",
            "  " + self.prompts.line("prompts", "with pairs"),
            f"  pairs written: {self.pairs}",
            f"  samples: {o['negative']} negatives ({o['unused']} of them over --pairs-per-prompt), "
            f"{o['matched']} matched the target, {o['too_similar']} too similar, {o['duplicate']} duplicates, "
            f"{o['empty']} empty"])


def self_contrast(model, tok, items: Sequence[Item], *, samples: int = 4, pairs_per_prompt: int = 1,
                  similarity: str = "chars", max_similarity: float = 0.9, max_new_tokens: int = 256,
                  sampling: Sampling = SAMPLING,
                  progress: Callable[[int], None] | None = None) -> tuple[list[dict], ContrastReport]:
    """DPO pairs (target chosen, sampled negative rejected) and the report. Prompt i samples with
    seed ``sampling.seed + i``, so a prompt's pairs do not depend on the others."""
    if similarity not in SIMILARITIES:
        raise ValueError(f"unknown similarity {similarity!r}; choose one of {', '.join(SIMILARITIES)}")
    report = ContrastReport(samples, similarity, max_similarity)
    pairs = []
    for i, item in enumerate(items):
        try:
            replies = sample_replies(model, tok, item.prompt, item.tools, samples, max_new_tokens,
                                     replace(sampling, seed=(sampling.seed or 0) + i))
        except ContextLengthError:
            replies = None
        if replies is None:
            report.prompts.dropped[TOO_LONG] += 1
        else:
            negatives, seen = contrast(item.target, replies, SIMILARITIES[similarity], max_similarity)
            report.outcomes.update(seen)
            used = negatives[:pairs_per_prompt]
            report.outcomes["unused"] += len(negatives) - len(used)
            for score, reply in used:
                pair = {"messages": item.prompt, "chosen": item.target, "rejected": one_or_list(reply),
                        "kind": "self_contrast", "similarity": round(score, 4)}
                pairs.append({**pair, "tools": item.tools} if item.tools else pair)
            report.pairs += len(used)
            if used:
                report.prompts.kept += 1
            else:
                report.prompts.dropped[ALL_EMPTY if seen["empty"] == len(replies) else
                                       ALL_SIMILAR if seen["too_similar"] else ALL_MATCHED] += 1
        if progress:
            progress(1)
    return pairs, report


def contrast(target: dict, replies: list[list[dict]], measure: Callable[[str, str], float],
             max_similarity: float) -> tuple[list[tuple[float, list[dict]]], Counter]:
    """The distinct negatives among ``replies`` as (similarity, reply), most dissimilar first
    (ties in sampling order), and what each sample was: empty, matched, too_similar, negative,
    duplicate."""
    want = canonical(reply_text([target]))
    seen, negatives, keys = Counter(), [], set()
    for reply in replies:
        if not reply:
            seen["empty"] += 1
            continue
        got = canonical(reply_text(reply))
        key, score = got[2], measure(want[2], got[2])
        if not is_wrong(want, got):
            seen["matched"] += 1
        elif score >= max_similarity:
            seen["too_similar"] += 1
        elif key in keys:
            seen["duplicate"] += 1
        else:
            keys.add(key)
            seen["negative"] += 1
            negatives.append((score, reply))
    negatives.sort(key=lambda x: x[0])  # stable: equal scores keep their sampling order
    return negatives, seen
