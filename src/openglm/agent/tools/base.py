"""What every agent tool shares: the :class:`Tool` interface and the :class:`Observation` it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

BUILTIN_NAMES = ("python", "simple_browser", "cogview")


class ToolError(Exception):
    """An expected failure of a tool call; its message goes back to the model as an error observation."""


@dataclass
class Observation:
    """A tool result: rendered as ``<|observation|>{metadata}\\n{content}``.

    ``files`` are paths the tool wrote for the user (images), also named in ``content``.
    """

    content: str
    metadata: str = ""
    is_error: bool = False
    files: list[str] = field(default_factory=list)

    @classmethod
    def error(cls, message: str, metadata: str = "") -> Observation:
        return cls(f"Error: {message}", metadata, is_error=True)


class Tool:
    """One tool the model may call.

    ``name`` is what the model writes in the assistant metadata line; :meth:`spec`
    is the entry of the ``tools`` list rendered into the system prompt.
    ``needs_confirmation`` makes the agent ask before each call; ``timeout_s`` is
    the agent's wall-clock guard around :meth:`run` (``None``: the tool enforces
    its own limits).
    """

    name: str = ""
    needs_confirmation: bool = False
    timeout_s: float | None = 60.0

    def spec(self) -> dict:
        raise NotImplementedError

    def run(self, arguments: Any) -> Observation:
        raise NotImplementedError

    def close(self) -> None:
        """Release processes and connections (idempotent)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def clip(text: str, limit: int) -> str:
    """``text`` cut to about ``limit`` characters, keeping head and tail and saying how much was dropped."""
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    return f"{text[:head]}\n... [{len(text) - head - tail} characters omitted] ...\n{text[-tail:]}"
