"""Convert between OpenAI chat-completions messages and GLM-4 messages.

Mapping (GLM-4 has no call ids; calls and results are matched by order):

- OpenAI ``tools`` -> the ``tools`` list of a prepended, empty system message.
  ``{"type": "function", "function": {...}}`` entries are kept as they are; the
  built-in types ``python``, ``simple_browser`` and ``cogview`` pass through.
- assistant ``tool_calls`` -> one assistant message per call with
  ``metadata=name`` and the call body as content (text content, if any, first).
- ``role: "tool"`` (or legacy ``"function"``) -> ``observation`` with empty metadata.

Built-in tools have no JSON arguments in GLM-4, so in OpenAI form their
arguments are wrapped: python ``{"code": ...}``, cogview ``{"prompt": ...}``,
simple_browser ``{"function": ..., "args": [...], "kwargs": {...}}``.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .messages import AssistantReply, Message, MessageLike, ToolCall, check_tools, normalize_messages
from .parse import format_tool_call, parse_tool_call
from .protocol import BUILTIN_TOOLS

# The key that wraps the text input of a built-in tool in OpenAI arguments.
_WRAPPED = {"python": "code", "cogview": "prompt"}


def from_openai(messages: Iterable[Mapping[str, Any]], tools: Sequence[dict] | None = None) -> list[Message]:
    """GLM-4 messages for an OpenAI request's ``messages`` and ``tools``."""
    out: list[Message] = []
    if tools is not None:
        out.append(Message("system", "", tools=_tools_from_openai(tools)))
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, Mapping):
            raise ValueError(f"{where}: expected a dict, got {type(m).__name__}")
        role = m.get("role")
        content = _text(m.get("content"), f"{where}.content")
        if role in ("system", "developer"):
            out.append(Message("system", content))
        elif role == "user":
            out.append(Message("user", content))
        elif role == "assistant":
            calls = list(m.get("tool_calls") or [])
            if m.get("function_call"):  # legacy single-call field
                calls.append({"function": m["function_call"]})
            if content or not calls:
                out.append(Message("assistant", content))
            for j, c in enumerate(calls):
                call = _call_from_openai(c, f"{where}.tool_calls[{j}]")
                body = format_tool_call(call).split("\n", 1)[1]
                out.append(Message("assistant", body, metadata=call.name))
        elif role in ("tool", "function"):
            out.append(Message("observation", content))
        else:
            raise ValueError(
                f"{where}.role: {role!r} is not an OpenAI chat role (system, developer, user, assistant, tool)"
            )
    return out


def to_openai(reply: AssistantReply) -> dict[str, Any]:
    """The OpenAI assistant message for a parsed reply (fresh ``call_…`` ids).

    A reply with ``error`` set is refused with ``ValueError``: decide first
    whether to retry or to return ``reply.raw`` as plain content.
    """
    if reply.error:
        raise ValueError(f"cannot convert a malformed reply: {reply.error} (retry, or send reply.raw as plain content)")
    msg: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if reply.tool_calls:
        msg["content"] = reply.content or None  # OpenAI's convention for call-only turns
        msg["tool_calls"] = [_call_to_openai(c, _new_call_id()) for c in reply.tool_calls]
    return msg


def to_openai_messages(messages: Iterable[MessageLike]) -> tuple[list[dict], list[dict] | None]:
    """``(openai_messages, openai_tools)`` for GLM-4 messages; reverses :func:`from_openai`.

    Consecutive assistant tool calls (and the plain assistant text right before
    them) become one OpenAI message; each observation answers the oldest
    unanswered call.  Observation metadata has no OpenAI equivalent and is
    dropped; empty system messages that only carry tools are not emitted.
    """
    msgs = normalize_messages(messages)
    out: list[dict] = []
    tools = None
    pending: deque[str] = deque()  # ids of calls still waiting for a result
    last_assistant: dict | None = None  # OpenAI message the next call may join
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        if m.tools is not None:
            if tools is not None:
                raise ValueError(
                    f"{where}.tools: an OpenAI request has one tools list, and an earlier message already carries tools"
                )
            tools = copy.deepcopy(m.tools)
            if m.role == "system" and not m.content:
                continue
        if m.role == "assistant" and m.metadata:
            try:
                call = parse_tool_call(m.metadata.strip(), m.content)
            except ValueError as e:
                raise ValueError(f"{where}: malformed tool call: {e}") from None
            call_id = _new_call_id()
            pending.append(call_id)
            entry = _call_to_openai(call, call_id)
            if last_assistant is None:
                last_assistant = {"role": "assistant", "content": None, "tool_calls": []}
                out.append(last_assistant)
            last_assistant.setdefault("tool_calls", []).append(entry)
            continue
        if m.role == "assistant":
            last_assistant = {"role": "assistant", "content": m.content}
            out.append(last_assistant)
            continue
        last_assistant = None
        if m.role == "observation":
            if not pending:
                raise ValueError(
                    f"{where}: observation without an earlier unanswered tool call; "
                    "OpenAI tool messages must answer a call"
                )
            out.append({"role": "tool", "tool_call_id": pending.popleft(), "content": m.content})
        else:
            out.append({"role": m.role, "content": m.content})
    return out, tools


def _tools_from_openai(tools: Sequence[dict]) -> list[dict]:
    out = []
    for j, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, Mapping) else None
        if kind != "function" and kind not in BUILTIN_TOOLS:
            raise ValueError(
                f"tools[{j}].type: {kind!r} is not supported; expected function, {', '.join(BUILTIN_TOOLS)}"
            )
        out.append(copy.deepcopy(dict(tool)))
    check_tools(out, "tools")
    return out


def _call_from_openai(c: Any, where: str) -> ToolCall:
    fn = c.get("function") if isinstance(c, Mapping) else None
    if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
        raise ValueError(f"{where}.function: expected {{'name': str, 'arguments': str}}")
    name, raw = fn["name"], fn.get("arguments", "{}")
    if isinstance(raw, str):
        try:
            args = json.loads(raw) if raw.strip() else {}
        except ValueError as e:
            raise ValueError(f"{where}.function.arguments: bad JSON: {e}") from None
    else:
        args = raw  # some clients send the object itself
    if not isinstance(args, dict):
        raise ValueError(f"{where}.function.arguments: expected a JSON object, got {type(args).__name__}")
    if name in _WRAPPED:
        key = _WRAPPED[name]
        if set(args) != {key}:
            raise ValueError(f"{where}.function.arguments: {name} expects {{{key!r}: str}}, got keys {sorted(args)}")
        args = args[key]
    try:
        return ToolCall(name, args)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def _call_to_openai(call: ToolCall, call_id: str) -> dict[str, Any]:
    args = {_WRAPPED[call.name]: call.arguments} if call.name in _WRAPPED else call.arguments
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": call.name, "arguments": json.dumps(args, ensure_ascii=False)},
    }


def _new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def _text(content: Any, where: str) -> str:
    """OpenAI content: a str, None, or a list of ``{"type": "text"}`` parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for k, part in enumerate(content):
            if not isinstance(part, Mapping) or part.get("type") != "text":
                raise ValueError(f"{where}[{k}]: only text parts are supported")
            texts.append(part.get("text", ""))
        return "".join(texts)
    raise ValueError(f"{where}: expected str or a list of text parts, got {type(content).__name__}")
