"""DPO preference pairs from synthetic tasks: the correct step vs a plausible wrong one.

Two decision points per task, each with a rule-made negative (Self-Contrast's model-sampled
negatives are added by the speedrun, which has a model to sample from):

- the first action: the right tool with the right arguments vs a wrong tool, arguments that
  break the schema or copy the wrong numbers, the wrong arithmetic operator, or an answer made
  up without any tool;
- the final answer: quoting the observation vs a wrong number.
"""

from __future__ import annotations

import json
import random

from . import world
from .tasks import OPERATOR_SYMBOLS, Task


def _perturb_number(rng: random.Random, text: str) -> str:
    """Change one digit of the first number in `text` (a wrong but plausible value)."""
    digits = [i for i, ch in enumerate(text) if ch.isdigit()]
    if not digits:
        return text + "0"
    i = rng.choice(digits[:8])
    new = str((int(text[i]) + rng.randint(1, 9)) % 10)
    return text[:i] + new + text[i + 1:]


def _wrong_action(rng: random.Random, task: Task, action: dict) -> dict:
    # Another operator on the same numbers teaches that the question's operator word picks it
    # (the nano model's commonest arithmetic miss; docs/experiments.md, 2026-11-30).
    symbol = OPERATOR_SYMBOLS.get(task.kind.removeprefix("arith-"))  # None for other kinds
    kind = rng.choice(["wrong_tool", "bad_arguments", "made_up"] + (["wrong_operator"] if symbol else []))
    if kind == "wrong_operator":
        other = rng.choice([s for s in OPERATOR_SYMBOLS.values() if s != symbol])
        return {**action, "content": action["content"].replace(symbol, other, 1)}
    tools = [t for t in task.messages[0].get("tools", [])] if task.messages[0]["role"] == "system" else []
    if kind == "wrong_tool":
        names = [t["function"]["name"] if t["type"] == "function" else t["type"] for t in tools]
        others = [n for n in names if n != action["metadata"]]
        if others:
            other = rng.choice(others)
            if other in world.FUNCTION_SCHEMAS:
                args = {k: "?" for k in world.FUNCTION_SCHEMAS[other]["parameters"]["required"]}
                return {"role": "assistant", "metadata": other, "content": json.dumps(args)}
            if other == "python":
                return {"role": "assistant", "metadata": "python", "content": "print('I am not sure')"}
            return {"role": "assistant", "metadata": "simple_browser",
                    "content": f'search("{task.prompt[-1]["content"][:30]}")'}
        kind = "made_up"
    if kind == "bad_arguments":
        if action["metadata"] in world.FUNCTION_SCHEMAS:
            args = json.loads(action["content"])
            args.pop(rng.choice(sorted(args)))  # a required argument goes missing
            return {**action, "content": json.dumps(args, ensure_ascii=False)}
        return {**action, "content": _perturb_number(rng, action["content"])}
    guess = _perturb_number(rng, task.answer) if task.answer else "42"
    return {"role": "assistant", "metadata": "", "content": guess}


def preference_pairs(tasks: list[Task], seed: int = 0) -> list[dict]:
    """Pairs in the DPO trainer's JSONL format: {"messages", "chosen", "rejected", "kind"}."""
    pairs = []
    for n, task in enumerate(tasks):
        if not task.calls:
            continue
        rng = random.Random(f"{seed}/pairs/{n}")
        first = len(task.prompt)
        action = task.messages[first]
        pairs.append({"messages": task.messages[:first], "chosen": action,
                      "rejected": _wrong_action(rng, task, action), "kind": "action"})
        final = task.messages[-1]
        wrong = {**final, "content": final["content"].replace(task.answer, _perturb_number(rng, task.answer), 1)}
        if wrong["content"] != final["content"]:
            pairs.append({"messages": task.messages[:-1], "chosen": final, "rejected": wrong, "kind": "answer"})
    return pairs
