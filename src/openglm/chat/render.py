"""Render a conversation into the GLM-4 prompt text.

``render`` is equal, byte for byte, to the official glm-4-9b-chat Jinja template
rendered by plain jinja2 with ``tojson = json.dumps(x, ensure_ascii=False,
indent=4)``.  ``render_segments`` gives the same text cut into pieces that say
which parts are control tokens and which message each piece belongs to, so a
tokenizer can encode control tokens by id and never parse them out of user text.

NOTE transformers' ``apply_chat_template`` renders with ``trim_blocks=True``,
which drops one newline before each ``## tool`` heading of this template; the
output here follows the template as written (the official Python tokenizer also
wrote ``\\n\\n## name``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .messages import MessageLike, check_tools, normalize_messages
from .protocol import (
    BUILTIN_TOOL_DESCRIPTIONS,
    DEFAULT_SYSTEM_PROMPT,
    FUNCTION_CALL_SUFFIX,
    PROMPT_PREFIX_TOKENS,
    TOOLS_HEADER,
    role_token,
)


@dataclass(frozen=True)
class Segment:
    """A piece of the rendered prompt.

    ``special`` is True exactly when ``text`` is one control token
    (``[gMASK]``, ``<sop>``, ``<|user|>``, ...); every other piece is plain text
    that must be encoded with special tokens disallowed.

    ``role`` is the role of the message the piece belongs to: a message's role
    token, its metadata line (``metadata + "\\n"``) and its content each carry the
    message's role, so for SFT the assistant's own ``<|assistant|>`` token,
    metadata line and content are the pieces with ``role == "assistant"``.
    The tool block a message carries is a system turn whatever the carrier's
    role, so it has ``role == "system"``.  The ``[gMASK]<sop>`` prefix and the
    trailing generation prompt ``<|assistant|>`` belong to no message:
    ``role is None``.

    ``index`` is the position of that message in the ``messages`` argument
    (``None`` for the prefix, the generation prompt and the ``tools=`` block).

    Metadata line and content are separate pieces because the original GLM-4
    tokenizer encoded them separately; to match a tokenizer that encodes the
    whole rendered string instead, join adjacent non-special pieces first.
    """

    text: str
    special: bool
    role: str | None = None
    index: int | None = None


def render(
    messages: Iterable[MessageLike],
    tools: Sequence[dict] | None = None,
    add_generation_prompt: bool = True,
) -> str:
    """The prompt text for ``messages`` (Message objects or official dicts).

    ``tools`` is a convenience that prepends ``{"role": "system", "content": "",
    "tools": tools}``, as the official demo does; it is an error to pass it when
    a message already carries tools.  ``add_generation_prompt`` appends
    ``<|assistant|>`` so the model answers next.
    """
    return "".join(s.text for s in render_segments(messages, tools, add_generation_prompt))


def render_segments(
    messages: Iterable[MessageLike],
    tools: Sequence[dict] | None = None,
    add_generation_prompt: bool = True,
) -> list[Segment]:
    """``render`` as a list of :class:`Segment`; their texts join to ``render(...)``."""
    msgs = normalize_messages(messages)
    segs = [Segment(tok, True) for tok in PROMPT_PREFIX_TOKENS]
    if tools is not None:
        check_tools(tools, "tools")
        carriers = [i for i, m in enumerate(msgs) if m.tools is not None]
        if carriers:
            raise ValueError(
                f"tools given twice: as tools= and in messages[{carriers[0]}].tools; pass them in one place"
            )
        segs += _tool_block(tools, None)
    for i, m in enumerate(msgs):
        if m.tools is not None:
            segs += _tool_block(m.tools, i)
        # The template skips empty messages entirely, metadata included.
        if m.content:
            segs.append(Segment(role_token(m.role), True, m.role, i))
            segs.append(Segment(m.metadata + "\n", False, m.role, i))
            segs.append(Segment(m.content, False, m.role, i))
    if add_generation_prompt:
        segs.append(Segment(role_token("assistant"), True))
    return segs


def render_tools(tools: Sequence[dict]) -> str:
    """The system text (after ``<|system|>``) that lists ``tools`` for the model."""
    check_tools(tools, "tools")
    parts = ["\n", DEFAULT_SYSTEM_PROMPT, TOOLS_HEADER]
    for j, tool in enumerate(tools):
        kind = tool["type"]
        if kind == "function":
            fn = tool["function"]
            try:
                schema = json.dumps(fn, ensure_ascii=False, indent=4)
            except (TypeError, ValueError) as e:
                raise ValueError(f"tools[{j}].function: not JSON-serialisable ({e})") from None
            parts.append(f"\n\n## {fn['name']}\n\n{schema}\n{FUNCTION_CALL_SUFFIX}")
        else:
            parts.append(f"\n\n## {kind}\n\n{BUILTIN_TOOL_DESCRIPTIONS[kind]}")
    return "".join(parts)


def _tool_block(tools: Sequence[dict], index: int | None) -> list[Segment]:
    return [
        Segment(role_token("system"), True, "system", index),
        Segment(render_tools(tools), False, "system", index),
    ]
