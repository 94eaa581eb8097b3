"""Rewards for RL and graders for self-critique: rule checkers, a reward model, your own function.

A reward sees one :class:`Sample` (the prompt record and what the policy did with it) and
returns a float. ``build_rewards`` reads the ``rewards:`` list of an RL config::

    rewards:
      - {type: task}                          # the agent task checker (synthetic tasks)
      - {type: answer}                        # final-answer match against record["answer"] (math)
      - {type: contains, text: "GLM"}         # the reply contains a string
      - {type: format, weight: 0.5}           # -1 per tool call that failed to parse or fit its schema
      - {type: length, max_tokens: 200}       # -(tokens over max_tokens) / max_tokens
      - {type: reward_model, path: runs/rm/final}
      - {type: python, function: "my_rewards.py:score"}   # fn(sample) -> float

Each entry takes an optional ``weight`` (default 1); the reward is the weighted sum.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Sample:
    """One rollout as a reward sees it."""

    record: dict                 # the prompt record: messages, and answer / calls / kind when known
    reply: list[dict]            # what followed the prompt: assistant turns and tool observations
    final: str = ""              # the last answer text (no call)
    reason: str = "answer"       # how the rollout ended: answer, max_steps, max_tokens, repetition, ...
    calls: list[dict] = field(default_factory=list)  # {"name", "arguments", "valid"} in order
    reply_tokens: int = 0        # tokens the policy generated

    @property
    def messages(self) -> list[dict]:
        return list(self.record["prompt"]) + self.reply


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?%?|-?\.\d+")


def _to_number(text: str) -> float | None:
    """The number written in ``text`` ("1,250.5", "1/2", "$3", "12.5%" -> 12.5), else None."""
    text = text.strip().replace(",", "").replace("$", "").rstrip("%")
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            return float(num) / float(den)
        return float(text)
    except (ValueError, ZeroDivisionError):
        return None


def final_answer(text: str) -> str:
    r"""The answer a solution commits to: the last ``\boxed{...}``, else the last number, else the
    last non-empty line."""
    boxed = re.findall(r"\\boxed\{([^{}]*)\}", text)
    if boxed:
        return boxed[-1].strip()
    numbers = _NUMBER.findall(text)
    if numbers:
        return numbers[-1]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def answer_matches(text: str, reference: str, rel_tol: float = 1e-4) -> bool:
    """Whether the final answer of ``text`` equals ``reference``: by value when both are numbers
    (``1,000`` = ``1000.0``; a percent sign on one side only is read both ways, so ``12.5%``
    matches ``12.5`` and ``0.125``), else as whitespace- and case-insensitive text."""
    got, want = final_answer(text), str(reference).strip()
    a, b = _to_number(got), _to_number(want)
    if a is not None and b is not None:
        scales = [1.0]
        if got.endswith("%") != want.endswith("%"):
            scales.append(0.01 if got.endswith("%") else 100.0)
        return any(math.isclose(a * k, b, rel_tol=rel_tol, abs_tol=1e-9) for k in scales)
    squash = lambda s: re.sub(r"\s+", "", s).lower()  # noqa: E731
    return bool(want) and squash(got) == squash(want)


def task_reward(sample: Sample, tool_credit: float = 0.0) -> float:
    """The agent task checker, as `openglm eval agent` scores a task: tasks that need a tool are
    right when the run ends in an answer containing the expected value; chat and refusal tasks
    when the model answers without calling anything. ``tool_credit`` adds partial credit for a
    first call to the expected tool."""
    want = (sample.record.get("calls") or [None])[0]
    answered = sample.reason == "answer" and bool(sample.final.strip())
    if want is None:
        return float(answered and not sample.calls)
    right = answered and str(sample.record.get("answer", "")) in sample.final
    first = sample.calls[0]["name"] if sample.calls else None
    return float(right) + tool_credit * float(first == want["name"])


def format_penalty(sample: Sample) -> float:
    """-1 for every call that did not parse or did not fit its tool, -1 for a run cut by repetition."""
    return -float(sum(not c["valid"] for c in sample.calls) + (sample.reason == "repetition"))


def length_penalty(sample: Sample, max_tokens: int) -> float:
    return -max(0, sample.reply_tokens - max_tokens) / max_tokens


def load_function(spec: str) -> Callable:
    """``"module:attr"`` or ``"path/to/file.py:attr"`` -> the callable."""
    where, sep, attr = spec.rpartition(":")
    if not sep or not where or not attr:
        raise ValueError(f"function {spec!r}: expected 'module:name' or 'file.py:name'")
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise ValueError(f"function {spec!r}: no file {path}")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"function {spec!r}: {where} has no callable {attr!r}")
    return fn


class RewardModelScore:
    """A trained reward model's score of the whole conversation (see `openglm rm`)."""

    def __init__(self, path: str):
        from openglm.train.reward_model import load_reward_model

        self.model, self.tok = load_reward_model(path)
        self.model.eval()

    def batch(self, samples: Sequence[Sample]) -> list[float]:
        return self.model.score_conversations(self.tok, [s.messages for s in samples])


_RULES = {"task": task_reward, "format": format_penalty, "length": length_penalty,
          "answer": lambda s: float(answer_matches(s.final, s.record.get("answer", ""))),
          "contains": lambda s, text: float(text in s.final)}


class Rewards:
    """The weighted sum of the configured rewards; also each term by name (for the log)."""

    def __init__(self, terms: list[tuple[str, float, Callable]]):
        self.terms = terms

    def __call__(self, samples: Sequence[Sample]) -> tuple[list[float], dict[str, list[float]]]:
        parts: dict[str, list[float]] = {}
        for name, _, fn in self.terms:
            if isinstance(fn, RewardModelScore):
                parts[name] = fn.batch(samples)
            else:
                parts[name] = [float(fn(s)) for s in samples]
        total = [sum(w * parts[name][i] for name, w, _ in self.terms) for i in range(len(samples))]
        return total, parts


def build_rewards(entries: list[dict]) -> Rewards:
    """``rewards:`` config entries -> :class:`Rewards` (errors name the entry that is wrong)."""
    if not entries:
        raise ValueError("rewards: give at least one, e.g. [{type: task}] or [{type: answer}]")
    terms = []
    for i, entry in enumerate(entries):
        where = f"rewards[{i}]"
        if not isinstance(entry, dict) or "type" not in entry:
            raise ValueError(f"{where}: expected a mapping with a 'type', got {entry!r}")
        kind, params = entry["type"], {k: v for k, v in entry.items() if k not in ("type", "weight")}
        weight = float(entry.get("weight", 1.0))
        try:
            if kind == "reward_model":
                fn = RewardModelScore(params.pop("path"))
            elif kind == "python":
                fn = load_function(params.pop("function"))
            elif kind in _RULES:
                rule = _RULES[kind]
                fn = (lambda s, rule=rule, params=params: rule(s, **params)) if params else rule
                if kind == "contains" and "text" not in params:
                    raise ValueError("needs 'text'")
                if kind == "length" and int(params.get("max_tokens", 0)) < 1:
                    raise ValueError("needs max_tokens >= 1")
            else:
                known = sorted([*_RULES, "reward_model", "python"])
                raise ValueError(f"unknown type {kind!r}; known: {', '.join(known)}")
        except KeyError as e:
            raise ValueError(f"{where} ({kind}): needs {e.args[0]!r}") from None
        except (ValueError, TypeError, ImportError) as e:
            raise ValueError(f"{where} ({kind}): {e}") from None
        terms.append((f"{kind}{i}" if any(t[0] == kind for t in terms) else kind, weight, fn))
    return Rewards(terms)


def resolve_reward_paths(entry: dict, base: Path) -> dict:
    """A ``rewards`` entry with its relative file paths (a reward model's ``path``, a python
    function's ``file.py``) taken from ``base``."""
    def under(value: str) -> str:
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else base / path)

    if not isinstance(entry, dict):
        return entry
    out = dict(entry)
    if out.get("type") == "reward_model" and isinstance(out.get("path"), str):
        out["path"] = under(out["path"])
    if out.get("type") == "python" and isinstance(out.get("function"), str):
        where, sep, attr = out["function"].rpartition(":")
        if where.endswith(".py"):
            out["function"] = f"{under(where)}{sep}{attr}"
    return out
