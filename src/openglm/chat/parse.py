"""Read tool calls out of generated assistant text, and write them back.

The model's turn after ``<|assistant|>`` is ``{metadata}\\n{body}``: empty
metadata means a plain answer, otherwise metadata names the tool and the body is
its input (JSON object, Python code, a browser call or an image prompt).
Parsing never raises on model output: what is malformed ends up in
``AssistantReply.error``.
"""

from __future__ import annotations

import ast
import json
import math
from typing import Any

from .messages import AssistantReply, ToolCall, browser_call_problem, tool_call_problem
from .protocol import BROWSER_FUNCTIONS, FREE_TEXT_TOOLS, role_token

_ASSISTANT = role_token("assistant")


def parse_assistant(text: str, *, allow_multiple: bool = False) -> AssistantReply:
    """Parse the text generated after ``<|assistant|>`` (stop token excluded).

    ``allow_multiple=True`` accepts several segments separated by
    ``<|assistant|>`` (an extension: the official model makes one call per
    turn); plain segments' texts are joined with ``"\\n"`` into ``content`` and
    all calls are returned in order.  Without it, a second segment is reported
    in ``error`` and only the first is used.  Leading and trailing whitespace of
    a plain answer is kept: ``content`` is what goes back into the history.
    """
    if not isinstance(text, str):
        return AssistantReply(error=f"expected generated text as str, got {type(text).__name__}")
    # A leading <|assistant|> (caller kept the prompt's token) splits off as "".
    pieces = [p for p in text.split(_ASSISTANT) if p]
    if not pieces:
        return AssistantReply(content="", raw=text)
    errors = []
    if len(pieces) > 1 and not allow_multiple:
        errors.append(
            f"the reply has {len(pieces)} assistant segments; only the first was "
            "parsed (pass allow_multiple=True to accept several)"
        )
        pieces = pieces[:1]
    contents, calls = [], []
    for k, piece in enumerate(pieces):
        if "\n" in piece:
            metadata, body = piece.split("\n", 1)
        else:
            # No metadata line at all: read it as a plain answer, like the
            # official demos do, rather than guess that it is a tool name.
            metadata, body = "", piece
        name = metadata.strip()
        if not name:
            if body:
                contents.append(body)
            continue
        try:
            calls.append(parse_tool_call(name, body))
        except ValueError as e:
            errors.append(f"segment {k}: {e}" if len(pieces) > 1 else str(e))
    return AssistantReply(
        content="\n".join(contents),
        tool_calls=calls,
        error="; ".join(errors) or None,
        raw=text,
    )


def parse_tool_call(name: str, body: str) -> ToolCall:
    """The call for tool ``name`` with body ``body``; ``ValueError`` if malformed."""
    if name in FREE_TEXT_TOOLS:
        problem = tool_call_problem(name, body)
        if problem:
            raise ValueError(problem)
        return ToolCall(name, body)
    if name == "simple_browser":
        return ToolCall(name, parse_browser_call(body))
    src = body.strip()
    if not src:
        raise ValueError(f"empty arguments for function {name!r}; expected a JSON object")
    try:
        args = json.loads(src)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"bad JSON arguments for function {name!r}: {e}") from None
    if not isinstance(args, dict):
        raise ValueError(f"arguments for function {name!r} must be a JSON object, got {type(args).__name__}")
    return ToolCall(name, args)


def parse_browser_call(body: str) -> dict:
    """``'search("q", recency_days=7)'`` -> ``{"function", "args", "kwargs"}``.

    Only a single call of a known function with literal arguments is accepted;
    nothing is evaluated (``ast.literal_eval`` on each argument).
    """
    src = body.strip()
    if not src:
        raise ValueError("empty simple_browser call")
    shape = 'expected one call such as search("query"), mclick([1, 3]) or open_url("https://...")'
    try:
        tree = ast.parse(src, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise ValueError(f"unparseable simple_browser call {_clip(src)}: {e}; {shape}") from None
    call = tree.body
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
        raise ValueError(f"unparseable simple_browser call {_clip(src)}: {shape}")
    if call.func.id not in BROWSER_FUNCTIONS:
        raise ValueError(
            f"unknown simple_browser function {call.func.id!r}; expected one of {', '.join(BROWSER_FUNCTIONS)}"
        )
    args, kwargs = [], {}
    try:
        for node in call.args:
            if isinstance(node, ast.Starred):
                raise ValueError("*args is not allowed")
            args.append(ast.literal_eval(node))
        for kw in call.keywords:
            if kw.arg is None:
                raise ValueError("**kwargs is not allowed")
            kwargs[kw.arg] = ast.literal_eval(kw.value)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError) as e:
        raise ValueError(f"simple_browser call {_clip(src)} must use literal arguments only: {e}") from None
    arguments = {"function": call.func.id, "args": args, "kwargs": kwargs}
    problem = browser_call_problem(arguments)
    if problem:
        raise ValueError(problem)
    return arguments


def format_tool_call(call: ToolCall) -> str:
    """The text the model emits after ``<|assistant|>`` for ``call``.

    ``parse_assistant(format_tool_call(c)).tool_calls == [c]`` for every valid call.
    """
    problem = tool_call_problem(call.name, call.arguments)
    if problem:
        raise ValueError(problem)
    if call.name in FREE_TEXT_TOOLS:
        body = call.arguments
    elif call.name == "simple_browser":
        body = format_browser_call(call.arguments)
    else:
        # Default separators: the spacing GLM-4 itself writes ({"city": "北京"}).
        body = json.dumps(call.arguments, ensure_ascii=False)
    return f"{call.name}\n{body}"


def format_browser_call(arguments: dict) -> str:
    """``{"function": "mclick", "args": [[1, 3]], "kwargs": {}}`` -> ``mclick([1, 3])``."""
    problem = browser_call_problem(arguments)
    if problem:
        raise ValueError(problem)
    parts = [_literal(a) for a in arguments["args"]]
    parts += [f"{k}={_literal(v)}" for k, v in arguments["kwargs"].items()]
    return f"{arguments['function']}({', '.join(parts)})"


def _literal(value: Any) -> str:
    """Python source for a literal; strings in double quotes as the model writes them."""
    if isinstance(value, str):
        # A JSON string is also a valid Python string literal (same escapes).
        return json.dumps(value, ensure_ascii=False)
    if value is None or isinstance(value, (bool, int)):
        return repr(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot write {value!r} as a literal")
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, tuple):
        inner = ", ".join(_literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in value.items()) + "}"
    raise ValueError(f"cannot write a {type(value).__name__} as a literal")


def _clip(src: str, limit: int = 80) -> str:
    return repr(src if len(src) <= limit else src[:limit] + "...")
