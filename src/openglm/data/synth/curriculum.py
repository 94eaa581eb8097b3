"""Short conversations made from tasks, mixed into a small model's pre-training (and SFT).

A nano model learns *what* a tool call looks like long before it learns to copy the
question's numbers and names into it (measured: docs/experiments.md, 2026-11-29). Copying is learned
from the number of copy examples seen, and a full task carries ~500 tokens of system prompt
for ~20 tokens of call. These conversations drop the system prompt and stop after the first
action, so one packed 2,048-token row holds ~40 of them instead of ~3:

- first actions: question -> the task's first assistant turn (tool call or reply);
- repeats: "repeat exactly: <question>" -> the question (plain copying, both languages); a
  third of them are a bare echo (question -> question), the easiest jump to learn first;
- whole tasks without the system prompt: every action and the final answer, which has to pick
  its figure out of the observations (the other year's population sits next to it).
"""

from __future__ import annotations

import random

from .tasks import Task

REPEAT = {"en": ["{q}", "Repeat exactly: {q}", "Say this back to me word for word: {q}"],
          "zh": ["{q}", "请原样重复：{q}", "把这句话一字不差地复述一遍：{q}"]}


def without_system(task: Task, turns: int | None = None) -> list[dict]:
    """The task's first `turns` messages (all: every action, observation and the final answer),
    with no system prompt."""
    return [m for m in task.messages[:turns] if m["role"] != "system"]


def first_action(task: Task) -> list[dict]:
    """The task's user message and first assistant turn, with no system prompt."""
    return without_system(task, len(task.prompt) + 1)


def copy_chat(ask: str, text: str) -> list[dict]:
    """The request `ask` (a REPEAT template) and the reply `text`, written back."""
    return [{"role": "user", "content": ask.format(q=text), "metadata": ""},
            {"role": "assistant", "metadata": "", "content": text}]


def repeat_chat(task: Task, rng: random.Random) -> list[dict]:
    return copy_chat(rng.choice(REPEAT[task.lang]), task.prompt[-1]["content"])


def random_copy_chats(tok, n: int, seed: int, span: tuple[int, int] = (4, 40)) -> list[list[dict]]:
    """`n` "repeat exactly" chats over strings of random tokens of `tok`: the copy drill in chat
    form (loss on the copy only), over every token, so also the pieces of names training never shows."""
    pieces = [p for p in (tok.decode([i]) for i in range(tok.n_ranks))
              if p.strip() and p.isprintable() and "\ufffd" not in p and "<|" not in p]
    rng = random.Random(seed)
    asks = [REPEAT["en"][1], REPEAT["zh"][1]]  # explicit requests only: a bare echo of noise teaches nothing
    chats = []
    for _ in range(n):
        text = "".join(rng.choices(pieces, k=rng.randint(*span))).strip()
        chats.append(copy_chat(rng.choice(asks), text))
    return chats


def warmup_conversations(tasks: list[Task], repeat_fraction: float, seed: int,
                         whole_fraction: float = 0.0) -> list[list[dict]]:
    """One first-action conversation per task; a `repeat_fraction` share become repeats instead,
    and a `whole_fraction` share the whole task without its system prompt."""
    rng = random.Random(seed)
    chats = []
    for t in tasks:
        r = rng.random()
        if r < repeat_fraction:
            chats.append(repeat_chat(t, rng))
        elif r < repeat_fraction + whole_fraction:
            chats.append(without_system(t))
        else:
            chats.append(first_action(t))
    return chats
