"""Seeded, bilingual synthetic agent tasks (AgentTuning in miniature) and DPO preference pairs.

    tasks = generate_tasks(1000, seed=0, split="train")      # list[Task]
    heldout = generate_tasks(200, seed=0, split="heldout")   # templates/entities/numbers never in train
    pairs = preference_pairs(tasks, seed=0)                  # chosen vs rejected assistant turns
"""

from __future__ import annotations

import json
import random
from functools import partial

from . import world
from .curriculum import random_copy_chats, warmup_conversations
from .preferences import preference_pairs
from .tasks import Task, arithmetic, fact_lookup, function_call, plain_chat, refusal, search_then_compute

FAMILIES = {"arithmetic": arithmetic, "function": function_call, "browser": fact_lookup,
            "two_step": search_then_compute, "chat": plain_chat, "refusal": refusal}
DEFAULT_MIX = {"arithmetic": 0.3, "function": 0.25, "browser": 0.2, "two_step": 0.1, "chat": 0.07, "refusal": 0.08}


def generate_tasks(n: int, seed: int = 0, split: str = "train", mix: dict[str, float] | None = None,
                   langs: tuple[str, ...] = ("en", "zh"), twins: bool = True) -> list[Task]:
    """n tasks; task i depends only on (seed, split, i), so any prefix is reproducible.

    `twins=False` leaves the arithmetic operator twins out of the training templates (held-out
    tasks are the same either way)."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    mix = mix or DEFAULT_MIX
    unknown = set(mix) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown task families {sorted(unknown)}; known: {sorted(FAMILIES)}")
    names, weights = zip(*mix.items())
    families = FAMILIES if twins else {**FAMILIES, "arithmetic": partial(arithmetic, twins=False)}
    out = []
    for i in range(n):
        rng = random.Random(f"{seed}/{split}/{i}")
        family = rng.choices(names, weights)[0]
        out.append(families[family](rng, split, rng.choice(langs)))
    return out


def write_jsonl(tasks: list[Task], path) -> None:
    """The official fine-tuning format: one {"messages": [...]} per line (plus task fields)."""
    with open(path, "w", encoding="utf-8") as f:
        for t in tasks:
            f.write(json.dumps(t.to_json(), ensure_ascii=False) + "\n")


__all__ = ["DEFAULT_MIX", "FAMILIES", "Task", "generate_tasks", "preference_pairs", "random_copy_chats",
           "warmup_conversations", "world", "write_jsonl"]
