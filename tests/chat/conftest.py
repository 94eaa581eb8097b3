"""Shared fixtures for the chat tests: the official template and a conversation generator."""

from __future__ import annotations

import json
import random
from pathlib import Path

import jinja2
import pytest

import openglm

TEMPLATE_PATH = Path(openglm.__file__).parent / "assets" / "glm-4-9b-chat.chat_template.jinja"


@pytest.fixture(scope="session")
def jinja_render():
    """Render with the official template exactly as the reference documents it."""
    env = jinja2.Environment()
    env.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False, indent=indent)
    template = env.from_string(TEMPLATE_PATH.read_text(encoding="utf-8"))

    def run(messages, add_generation_prompt=True):
        return template.render(messages=messages, add_generation_prompt=add_generation_prompt)

    return run


# Text pools mix languages and characters that could trip up a renderer:
# Jinja syntax, control-token look-alikes, JSON quotes, backslashes, newlines.
TEXTS = [
    "你好",
    "What's the weather in Beijing?",
    "北京今天天气怎么样？",
    "Hello, world!",
    "多行\n文本\n\n第三段",
    "{{ not jinja }} {% neither %}",
    "a <|user|> b <|assistant|>",
    "[gMASK]<sop> in text",
    'tab\tand "quotes" and \\backslash',
    "emoji 🌧️ 雨",
    "  leading and trailing spaces  ",
    "\n",
    "0",
    "数学: 1 + 1 = 2；结论：正确。",
    "line with trailing newline\n",
    "混合 mixed 文本 text 【1†source】",
]
METADATA = ["", "", "", "browser_result", "quote_result [7†source]", "cogview_result", "备注"]


def _function_tool(rng: random.Random, k: int) -> dict:
    name = rng.choice(["get_weather", "search_flights", "计算器", "send_email", "lookup"]) + f"_{k}"
    fn = {"name": name, "description": rng.choice(TEXTS)}
    if rng.random() < 0.8:
        fn["parameters"] = {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": rng.choice(TEXTS)},
                "days": {"type": "integer", "enum": [1, 3, 7]},
                "nested": {"type": "object", "properties": {"flag": {"type": "boolean"}}},
            },
            "required": rng.sample(["city", "days"], rng.randint(0, 2)),
        }
    if rng.random() < 0.2:
        fn["strict"] = True
    return {"type": "function", "function": fn}


def _tools(rng: random.Random) -> list[dict]:
    tools = [_function_tool(rng, k) for k in range(rng.randint(0, 3))]
    tools += [{"type": t} for t in ("python", "simple_browser", "cogview") if rng.random() < 0.5]
    rng.shuffle(tools)
    return tools


def _tool_call_body(rng: random.Random) -> tuple[str, str]:
    kind = rng.randrange(4)
    if kind == 0:
        args = {"city": rng.choice(["北京", "Paris", "上海"]), "days": rng.randint(1, 7)}
        return "get_weather", json.dumps(args, ensure_ascii=False)
    if kind == 1:
        return "python", rng.choice(["print(1 + 1)", "import math\nprint(math.pi)\n", "x = '{{ y }}'"])
    if kind == 2:
        return "simple_browser", rng.choice(
            ['search("北京 天气", recency_days=7)', "mclick([1, 3, 5])", 'open_url("https://example.com")']
        )
    return "cogview", "A watercolor painting of the Great Wall at sunrise."


def _message(rng: random.Random) -> dict:
    role = rng.choice(["system", "user", "user", "assistant", "assistant", "observation"])
    msg = {"role": role, "content": rng.choice(TEXTS + [""])}
    if role == "assistant" and rng.random() < 0.5:
        msg["metadata"], msg["content"] = _tool_call_body(rng)
    elif rng.random() < 0.7:  # otherwise leave the key out: the template reads it as ""
        msg["metadata"] = rng.choice(METADATA)
    return msg


def make_conversation(seed: int) -> tuple[list[dict], bool]:
    """A random but reproducible conversation in the official dict format."""
    rng = random.Random(seed)
    messages = []
    if rng.random() < 0.6:
        messages.append(
            {"role": "system", "content": rng.choice(["", "", "你是一个乐于助人的助手。"]), "tools": _tools(rng)}
        )
    messages += [_message(rng) for _ in range(rng.randint(0, 9))]
    if messages and rng.random() < 0.15:  # a tool list on a later, non-system message
        rng.choice(messages)["tools"] = _tools(rng)
    return messages, rng.random() < 0.7


@pytest.fixture(scope="session")
def random_conversation():
    return make_conversation
