"""Short conversations made from tasks, mixed into a small model's pre-training (and SFT).

A nano model learns *what* a tool call looks like long before it learns to copy the
question's numbers and names into it (measured: BENCHMARKS.md, session 10). Copying is learned
from the number of copy examples seen, and a full task carries ~500 tokens of system prompt
for ~20 tokens of call. These conversations drop the system prompt and stop after the first
action, so one packed 2,048-token row holds ~40 of them instead of ~3:

- first actions: question -> the task's first assistant turn (tool call or reply);
- repeats: "repeat exactly: <question>" -> the question (plain copying, both languages); a
  third of them are a bare echo (question -> question), the easiest jump to learn first.
"""

from __future__ import annotations

import random

from .tasks import Task

REPEAT = {"en": ["{q}", "Repeat exactly: {q}", "Say this back to me word for word: {q}"],
          "zh": ["{q}", "请原样重复：{q}", "把这句话一字不差地复述一遍：{q}"]}


def first_action(task: Task) -> list[dict]:
    """The task's user message and first assistant turn, with no system prompt."""
    k = len(task.prompt)
    return [m for m in task.messages[: k + 1] if m["role"] != "system"]


def repeat_chat(task: Task, rng: random.Random) -> list[dict]:
    question = task.prompt[-1]["content"]
    ask = rng.choice(REPEAT[task.lang]).format(q=question)
    return [{"role": "user", "content": ask, "metadata": ""},
            {"role": "assistant", "metadata": "", "content": question}]


def warmup_conversations(tasks: list[Task], repeat_fraction: float, seed: int) -> list[list[dict]]:
    """One first-action conversation per task; a `repeat_fraction` share become repeats instead."""
    rng = random.Random(seed)
    return [repeat_chat(t, rng) if rng.random() < repeat_fraction else first_action(t) for t in tasks]
