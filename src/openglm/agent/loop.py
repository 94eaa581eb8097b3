"""The GLM-4 All Tools agent loop: render -> generate -> parse -> dispatch -> observe -> repeat.

    agent = Agent(backend, tools=[PythonTool(workdir), BrowserTool(LocalSearch(docs))])
    for event in agent.run("What was the CAGR of China's population from 2000 to 2020?"):
        ...   # TextDelta, ToolCallEvent, ObservationEvent, then one FinalEvent

A run ends with a plain answer or at a limit (steps, generated tokens, wall
time, the same call repeated); whatever goes wrong in a call (malformed call,
unknown tool, invalid arguments, a failing or slow tool) goes back to the
model as an error observation and the run continues.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field

from openglm.chat import Message, ToolCall, parse_assistant

from .backends import ASSISTANT, Backend, BackendError, Generation
from .events import Event, FinalEvent, ObservationEvent, TextDelta, ToolCallEvent
from .session import SessionStore
from .tools.base import Observation, Tool, ToolError, clip


@dataclass
class Limits:
    max_steps: int = 10            # model turns per run
    max_tokens: int = 16384        # generated tokens per run
    max_turn_tokens: int = 2048    # generated tokens per model turn
    max_seconds: float = 600.0     # wall time per run (checked between steps; caps tool guards)
    max_identical_calls: int = 3   # the same call (tool and arguments) this often per run, then stop
    max_observation_chars: int = 20000


class ToolTimeout(Exception):
    pass


@dataclass
class _RunState:
    """What one ``Agent.run`` counts against its limits."""

    start: float
    used_tokens: int = 0
    seen: Counter = field(default_factory=Counter)  # identical calls (tool + arguments)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def final(self, content: str, reason: str, steps: int) -> FinalEvent:
        return FinalEvent(content, reason, steps, self.used_tokens, round(self.elapsed(), 3))


class Agent:
    """A tool-using conversation with one model backend.

    ``multiple_calls=True`` runs every call of a turn (the official model makes
    one per turn; extra segments are otherwise dropped with a note).
    ``confirm(call) -> bool`` is asked before calls to tools that need
    confirmation; without it such calls are refused.  With ``store`` the
    conversation is saved message by message under ``session_id`` (a new id if
    ``None``), and an existing session is resumed.
    """

    def __init__(self, backend: Backend, tools: Iterable[Tool] = (), *, limits: Limits | None = None,
                 system_prompt: str | None = None, multiple_calls: bool = False,
                 confirm: Callable[[ToolCall], bool] | None = None, store: SessionStore | None = None,
                 session_id: str | None = None):
        self.backend = backend
        self.tools: dict[str, Tool] = {}
        for tool in tools:
            if tool.name in self.tools:
                raise ValueError(f"two tools are named {tool.name!r}; tool names must be unique")
            self.tools[tool.name] = tool
        self.limits = limits or Limits()
        self.multiple_calls, self.confirm, self.store = multiple_calls, confirm, store
        self.messages: list[Message] = []
        self.session_id = session_id
        if store is not None:
            if session_id is not None and store.exists(session_id):
                self.messages = store.load(session_id)
            else:
                self.session_id = store.create(session_id=session_id)
        if system_prompt and not self.messages:
            self._append(Message("system", system_prompt))

    def tool_specs(self) -> list[dict]:
        return [t.spec() for t in self.tools.values()]

    def ask(self, task: str) -> FinalEvent:
        """Run to the end and return the final event (answer text in ``.content``)."""
        final = None
        for event in self.run(task):
            if isinstance(event, FinalEvent):
                final = event
        return final

    def run(self, task: str) -> Iterator[Event]:
        """Add ``task`` as a user turn and work on it, yielding events; the last one is a :class:`FinalEvent`."""
        lim, run = self.limits, _RunState(time.monotonic())
        self._append(Message("user", task))
        for step in range(1, lim.max_steps + 1):
            budget = min(lim.max_turn_tokens, lim.max_tokens - run.used_tokens)
            out_of_time = run.elapsed() > lim.max_seconds
            if out_of_time or budget <= 0:
                yield run.final("", "max_time" if out_of_time else "max_tokens", step - 1)
                return
            generation = yield from self._model_turn(budget)
            if isinstance(generation, str):
                yield run.final(generation, "backend_error", step)
                return
            run.used_tokens += generation.tokens
            segments, dropped = self._segments(generation.text)
            for message, _ in segments:
                self._append(message)
            calls = [(m, reply) for m, reply in segments if m.metadata]
            if not calls:
                answer = "\n".join(reply.content for _, reply in segments if reply.content)
                reason = {"stop": "answer", "repetition": "repetition"}.get(generation.finish_reason, "max_tokens")
                yield run.final(answer, reason, step)
                return
            stop = yield from self._run_calls(calls, dropped, run, step)
            if stop:
                yield run.final("", stop, step)
                return
        yield run.final("", "max_steps", lim.max_steps)

    def _model_turn(self, budget: int) -> Generator[Event, None, Generation | str]:
        """Stream one model turn as text deltas; returns the generation, or the error as a string."""
        stream, generation = _AnswerStream(), None
        try:
            for item in self.backend.stream(self.messages, self.tool_specs(), max_tokens=budget,
                                            allow_multiple=self.multiple_calls):
                if isinstance(item, str):
                    text = stream.feed(item)
                    if text:
                        yield TextDelta(text)
                else:
                    generation = item
        except BackendError as e:
            return str(e)
        if generation is None:
            return f"{type(self.backend).__name__} ended without a Generation"
        rest = stream.finish()
        if rest:
            yield TextDelta(rest)
        return generation

    def _run_calls(self, calls: list[tuple[Message, object]], dropped: int, run: _RunState,
                   step: int) -> Generator[Event, None, str | None]:
        """Run the turn's calls in order, each answered by an observation; returns why the run stops, if it does."""
        stop = None
        for k, (message, reply) in enumerate(calls):
            call = reply.tool_calls[0] if reply.tool_calls else None
            yield ToolCallEvent(message.metadata, call.arguments if call else message.content, step)
            # every call gets an observation, even when not run, so the history stays well-formed
            obs, stop = self._observe(call, reply, stop, run)
            if k == 0 and dropped:
                obs.content += (f"\n[note: the turn held {dropped} more call(s) that were not run; "
                                "make one call per turn]")
            obs.content = clip(obs.content, self.limits.max_observation_chars) or "(empty result)"
            self._append(Message("observation", obs.content, obs.metadata))
            yield ObservationEvent(message.metadata, obs.content, obs.metadata, obs.is_error, obs.files, step)
        return stop

    def _observe(self, call: ToolCall | None, reply, stop: str | None,
                 run: _RunState) -> tuple[Observation, str | None]:
        if stop:
            return Observation.error(f"not run: the run stopped ({stop})"), stop
        if call is None:
            return Observation.error(f"malformed call: {reply.error}"), None
        key = f"{call.name}\n{json.dumps(call.arguments, sort_keys=True, ensure_ascii=False)}"
        run.seen[key] += 1
        if run.seen[key] > self.limits.max_identical_calls:
            return Observation.error(f"not run: this exact call was already made {run.seen[key] - 1} times"), \
                "repeated_call"
        return self._dispatch(call, self.limits.max_seconds - run.elapsed()), None

    def _segments(self, text: str) -> tuple[list[tuple[Message, object]], int]:
        """The turn's segments as (history message, parsed reply), and how many calls were dropped.

        Text segments are always kept (e.g. "Let me check." before a call); without
        ``multiple_calls`` only the first call segment is.
        """
        out, dropped = [], 0
        for piece in [p for p in text.split(ASSISTANT) if p] or [""]:
            metadata, body = piece.split("\n", 1) if "\n" in piece else ("", piece)
            metadata = metadata.strip()
            if metadata and not self.multiple_calls and any(m.metadata for m, _ in out):
                dropped += 1
                continue
            out.append((Message("assistant", body, metadata=metadata), parse_assistant(piece)))
        return out, dropped

    def _dispatch(self, call: ToolCall, seconds_left: float) -> Observation:
        tool = self.tools.get(call.name)
        if tool is None:
            return Observation.error(f"unknown tool {call.name!r}; available tools: {', '.join(self.tools) or 'none'}")
        if tool.needs_confirmation and not (self.confirm is not None and self.confirm(call)):
            return Observation.error(f"the user did not allow this call to {call.name}")
        timeout = None if tool.timeout_s is None else min(tool.timeout_s, max(1.0, seconds_left))
        try:
            return _run_with_timeout(tool.run, call.arguments, timeout)
        except ToolTimeout:
            return Observation.error(f"{call.name} did not finish within {timeout:g} s")
        except ToolError as e:
            return Observation.error(str(e))
        except Exception as e:  # noqa: BLE001 - a failing tool must not end the run
            return Observation.error(f"{call.name} failed: {type(e).__name__}: {e}")

    def _append(self, message: Message) -> None:
        self.messages.append(message)
        if self.store is not None:
            self.store.append(self.session_id, message)

    def close(self) -> None:
        """Close every tool (kernels, connections)."""
        for tool in self.tools.values():
            tool.close()

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _run_with_timeout(fn, argument, timeout: float | None):
    """``fn(argument)``, giving up after ``timeout`` seconds (the call's thread is left to finish on its own)."""
    if timeout is None:
        return fn(argument)
    box: dict = {}

    def target() -> None:
        try:
            box["value"] = fn(argument)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = e

    worker = threading.Thread(target=target, name="openglm-tool", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise ToolTimeout
    if "error" in box:
        raise box["error"]
    return box["value"]


class _AnswerStream:
    """Passes on the text of a plain answer as it streams; holds back tool-call turns.

    The first line of a turn is its metadata: empty for an answer, a tool name for a call.
    """

    def __init__(self) -> None:
        self.head = ""
        self.mode = "undecided"  # -> "answer", "call" or "done"

    def feed(self, delta: str) -> str:
        if self.mode == "answer":
            if ASSISTANT in delta:  # a further segment (a call) follows the answer text
                self.mode = "done"
                return delta.split(ASSISTANT, 1)[0]
            return delta
        if self.mode != "undecided":
            return ""
        self.head += delta
        if "\n" not in self.head:
            return ""
        metadata, rest = self.head.split("\n", 1)
        if metadata.strip():
            self.mode = "call"
            return ""
        self.mode = "answer"
        return self.feed(rest) if rest else ""

    def finish(self) -> str:
        """Text held back from a turn that never wrote a newline: a plain answer without metadata line."""
        if self.mode == "undecided" and ASSISTANT not in self.head:
            self.mode = "done"
            return self.head
        return ""
