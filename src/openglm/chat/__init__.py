"""The GLM-4 chat and tool-call protocol, in pure Python.

- ``render`` / ``render_segments``: messages -> prompt text, equal to the official
  glm-4-9b-chat template; segments mark control tokens and message roles.
- ``parse_assistant`` / ``format_tool_call``: generated text <-> tool calls.
- ``from_openai`` / ``to_openai`` / ``to_openai_messages``: OpenAI wire format.
- ``protocol``: every protocol string (special tokens, tool descriptions).
"""

from .messages import AssistantReply, Message, ToolCall, normalize_messages, tool_name
from .openai import from_openai, to_openai, to_openai_messages
from .parse import format_tool_call, parse_assistant
from .protocol import PROMPT_PREFIX, SPECIAL_TOKENS, STOP_TOKENS
from .render import Segment, render, render_segments

__all__ = [
    "AssistantReply",
    "Message",
    "PROMPT_PREFIX",
    "SPECIAL_TOKENS",
    "STOP_TOKENS",
    "Segment",
    "ToolCall",
    "format_tool_call",
    "from_openai",
    "normalize_messages",
    "parse_assistant",
    "render",
    "render_segments",
    "to_openai",
    "to_openai_messages",
    "tool_name",
]
