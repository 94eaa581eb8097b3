"""What :meth:`Agent.run` yields while it works, for CLIs and servers (``to_dict`` gives JSON)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TextDelta:
    """A piece of the answer text as it is generated (tool-call bodies are not streamed)."""

    text: str
    type: str = field(default="text", init=False)


@dataclass
class ToolCallEvent:
    name: str
    arguments: Any
    step: int
    type: str = field(default="tool_call", init=False)


@dataclass
class ObservationEvent:
    name: str
    content: str
    metadata: str = ""
    is_error: bool = False
    files: list[str] = field(default_factory=list)
    step: int = 0
    type: str = field(default="observation", init=False)


# Why a run ended: a plain answer, or the limit that stopped it.
REASONS = ("answer", "max_steps", "max_tokens", "max_time", "repeated_call", "backend_error")


@dataclass
class FinalEvent:
    content: str
    reason: str
    steps: int
    tokens: int
    seconds: float
    type: str = field(default="final", init=False)


Event = TextDelta | ToolCallEvent | ObservationEvent | FinalEvent


def to_dict(event: Event) -> dict[str, Any]:
    return asdict(event)
