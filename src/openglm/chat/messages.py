"""Typed GLM-4 chat messages, tool calls and parsed assistant replies.

A conversation is a list of :class:`Message`.  Plain dicts in the official
fine-tuning format (``{"role", "content", "metadata", "tools"}``) are accepted
everywhere and converted by :func:`normalize_messages`, which names the message
index and field of anything malformed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .protocol import BROWSER_FUNCTIONS, BUILTIN_TOOLS, FREE_TEXT_TOOLS, ROLES

TOOL_TYPES: tuple[str, ...] = ("function", *BUILTIN_TOOLS)
MESSAGE_FIELDS: tuple[str, ...] = ("role", "content", "metadata", "tools")


@dataclass
class Message:
    """One turn: rendered as ``<|role|>{metadata}\\n{content}``.

    ``metadata`` is the rest of the role line: the tool name of an assistant tool
    call, or a label such as ``browser_result`` on an observation.  ``tools``
    (a list of ``{"type": ...}`` dicts) makes the message emit the tool system
    block before its own text; ``None`` means the message carries no tools.
    A message with empty ``content`` renders nothing but its tool block.
    """

    role: str
    content: str = ""
    metadata: str = ""
    tools: list[dict] | None = None

    def __post_init__(self) -> None:
        _check_fields("Message", self.role, self.content, self.metadata, self.tools)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "message") -> Message:
        """Build from an official-format dict; ``where`` prefixes error messages."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: expected a dict or Message, got {type(data).__name__}")
        unknown = [k for k in data if k not in MESSAGE_FIELDS]
        if unknown:
            hint = ""
            if {"tool_calls", "tool_call_id", "name"} & set(unknown):
                hint = " (OpenAI-style messages: convert them with openglm.chat.from_openai)"
            raise ValueError(f"{where}: unknown field {unknown[0]!r}; expected {', '.join(MESSAGE_FIELDS)}{hint}")
        if "role" not in data:
            raise ValueError(f"{where}.role: missing")
        # None is read as "absent": the Jinja template would print the text "None"
        # for metadata=None, which is never what a dataset means.
        fields = {k: data.get(k) for k in MESSAGE_FIELDS}
        fields["content"] = "" if fields["content"] is None else fields["content"]
        fields["metadata"] = "" if fields["metadata"] is None else fields["metadata"]
        _check_fields(where, **fields)
        if fields["tools"] is not None:
            fields["tools"] = list(fields["tools"])
        return cls(**fields)

    def to_dict(self) -> dict[str, Any]:
        """The official-format dict (``tools`` only when present)."""
        out: dict[str, Any] = {"role": self.role, "content": self.content, "metadata": self.metadata}
        if self.tools is not None:
            out["tools"] = self.tools
        return out


@dataclass
class ToolCall:
    """A tool call made by the assistant.

    ``arguments`` depends on the tool:

    - user function: a ``dict`` (the JSON object the model wrote);
    - ``python``: ``str`` source code;
    - ``cogview``: ``str`` image prompt;
    - ``simple_browser``: ``{"function": "search", "args": [...], "kwargs": {...}}``,
      i.e. ``search("q", recency_days=7)`` is
      ``{"function": "search", "args": ["q"], "kwargs": {"recency_days": 7}}``.
      Positional and keyword arguments are kept as written so that formatting
      reproduces the call; build one with :meth:`ToolCall.browser`.
    """

    name: str
    arguments: dict | str

    def __post_init__(self) -> None:
        problem = tool_call_problem(self.name, self.arguments)
        if problem:
            raise ValueError(f"ToolCall: {problem}")

    @classmethod
    def browser(cls, function: str, *args: Any, **kwargs: Any) -> ToolCall:
        """``ToolCall.browser("mclick", [1, 3])`` -> a simple_browser call."""
        return cls("simple_browser", {"function": function, "args": list(args), "kwargs": dict(kwargs)})


@dataclass
class AssistantReply:
    """What :func:`parse_assistant` read from one generated assistant turn.

    ``content`` is the plain answer text, ``tool_calls`` the calls in order;
    ``error`` is ``None`` or a message saying what was malformed (then the
    offending call is left out of ``tool_calls``).  ``raw`` is the input text.
    """

    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    error: str | None = None
    raw: str = ""


MessageLike = Message | Mapping[str, Any]


def normalize_messages(messages: Iterable[MessageLike]) -> list[Message]:
    """Convert dicts / Messages into a list of validated :class:`Message`.

    Raises ``ValueError`` naming the index and field, e.g.
    ``messages[2].content: expected str, got list``.
    """
    if isinstance(messages, (str, bytes, Mapping)):
        raise ValueError(f"messages: expected a list of messages, got a single {type(messages).__name__}")
    out = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if isinstance(m, Message):
            # dataclasses are mutable: check again, now with the index in errors
            _check_fields(where, m.role, m.content, m.metadata, m.tools)
            out.append(m)
        else:
            out.append(Message.from_dict(m, where))
    return out


def _check_fields(where: str, role: Any, content: Any, metadata: Any, tools: Any) -> None:
    if role not in ROLES:
        hint = " (OpenAI 'tool' messages: convert with openglm.chat.from_openai)" if role == "tool" else ""
        raise ValueError(f"{where}.role: {role!r} is not one of {', '.join(ROLES)}{hint}")
    for name, value in (("content", content), ("metadata", metadata)):
        if not isinstance(value, str):
            raise ValueError(f"{where}.{name}: expected str, got {type(value).__name__}")
    # A newline in metadata would move the rest of it into the content on parsing.
    if "\n" in metadata:
        raise ValueError(f"{where}.metadata: must be a single line, got {metadata!r}")
    if tools is not None:
        check_tools(tools, f"{where}.tools")


def check_tools(tools: Any, where: str = "tools") -> None:
    """Raise ``ValueError`` unless ``tools`` is a list of tool dicts we can render."""
    if not isinstance(tools, (list, tuple)):
        raise ValueError(f"{where}: expected a list of tools, got {type(tools).__name__}")
    for j, tool in enumerate(tools):
        at = f"{where}[{j}]"
        if not isinstance(tool, Mapping):
            raise ValueError(f"{at}: expected a dict, got {type(tool).__name__}")
        kind = tool.get("type")
        # The template silently drops unknown types; we refuse them so that a
        # tool never disappears from the prompt unnoticed.
        if kind not in TOOL_TYPES:
            raise ValueError(f"{at}.type: {kind!r} is not one of {', '.join(TOOL_TYPES)}")
        if kind == "function":
            fn = tool.get("function")
            if not isinstance(fn, Mapping):
                raise ValueError(f"{at}.function: expected a dict with at least 'name', got {type(fn).__name__}")
            name = fn.get("name")
            if not isinstance(name, str) or not name or "\n" in name:
                raise ValueError(f"{at}.function.name: expected a one-line non-empty str, got {name!r}")


def tool_name(spec: Mapping) -> str:
    """The name a tool spec is called by: a function's name, else the builtin's type (`python`, ...)."""
    return spec["function"]["name"] if spec.get("type") == "function" else spec["type"]


def tool_call_problem(name: Any, arguments: Any) -> str | None:
    """Why ``(name, arguments)`` is not a well-formed call, or ``None`` if it is."""
    if not isinstance(name, str) or not name.strip() or "\n" in name or name != name.strip():
        return f"tool name must be a non-empty single line without surrounding spaces, got {name!r}"
    if name in FREE_TEXT_TOOLS:
        if not isinstance(arguments, str):
            return f"{name} arguments must be a str, got {type(arguments).__name__}"
        if not arguments.strip():
            return "empty python code" if name == "python" else "empty cogview prompt"
        return None
    if name == "simple_browser":
        return browser_call_problem(arguments)
    if not isinstance(arguments, dict):
        return f"arguments of function {name!r} must be a dict, got {type(arguments).__name__}"
    return None


def browser_call_problem(arguments: Any) -> str | None:
    """Check a simple_browser call dict against the functions the tool offers."""
    if not isinstance(arguments, dict) or set(arguments) != {"function", "args", "kwargs"}:
        return "simple_browser arguments must be a dict with keys 'function', 'args', 'kwargs'"
    fn, args, kwargs = arguments["function"], arguments["args"], arguments["kwargs"]
    if fn not in BROWSER_FUNCTIONS:
        return f"unknown simple_browser function {fn!r}; expected one of {', '.join(BROWSER_FUNCTIONS)}"
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        return "simple_browser 'args' must be a list and 'kwargs' a dict"
    params = BROWSER_FUNCTIONS[fn]
    if len(args) > len(params):
        return f"{fn}() takes at most {len(params)} argument(s), got {len(args)}"
    bound = dict(zip(params, args))
    for key, value in kwargs.items():
        if key not in params:
            return f"{fn}() got an unexpected keyword argument {key!r}"
        if key in bound:
            return f"{fn}() got multiple values for argument {key!r}"
        bound[key] = value
    required = params[:1]  # recency_days is optional; every first parameter is not
    for p in required:
        if p not in bound:
            return f"{fn}() missing required argument {p!r}"
    expected = {"query": str, "url": str, "recency_days": int}
    for key, value in bound.items():
        if key == "ids":
            if not isinstance(value, list) or not all(_is_int(v) for v in value):
                return f"mclick() ids must be a list of ints, got {value!r}"
        elif key == "recency_days":
            if not _is_int(value):
                return f"search() recency_days must be an int, got {value!r}"
        elif not isinstance(value, expected[key]):
            return f"{fn}() {key} must be a str, got {value!r}"
    return None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
