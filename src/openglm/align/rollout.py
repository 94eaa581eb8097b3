"""Rollouts: several samples per prompt, decoded as one batch, single-turn or through the agent.

In ``agent`` mode every sample is a real :class:`~openglm.agent.Agent` run with the task's real
tools (the sandboxed Python kernel, the browser over the shipped documents, the world's user
functions), each in its own thread. Their backends are members of one :class:`TurnBatcher`:
a turn is decoded when every running agent has asked for one, so the G samples of each prompt
(and every prompt of the step) share one ``generate_ids`` batch.

The training sequence of a rollout is the token ids the policy actually saw and wrote: the
first prompt, each generated turn (its stop token included: the policy chose to stop), and the
observation tokens the next turn's prompt adds. Only generated tokens are marked, so the loss
lands on the policy's own tokens and never on observations. A sampled turn can tokenize
differently once the agent re-renders it; then the next prompt's tokens after the stop token
that ended the turn are appended to the sampled ones (``Rollout.restarts`` counts such turns).
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from openglm.agent import Agent, Limits
from openglm.agent.backends import Backend, Generation
from openglm.agent.events import FinalEvent, ToolCallEvent
from openglm.agent.tools.base import Tool
from openglm.chat import Message, parse_assistant, tool_name
from openglm.eval.agent import call_is_valid, make_tools
from openglm.infer import Sampling, generate_ids

from .rewards import Sample


@dataclass
class Rollout:
    """One sample: its token ids, which of them the policy generated, and what it did."""

    group: int                       # index of the prompt it answers
    ids: list[int] = field(default_factory=list)
    generated: list[bool] = field(default_factory=list)
    sample: Sample | None = None
    restarts: int = 0  # turns whose prompt did not extend the tokens so far (see module docstring)

    def add_turn(self, prompt: list[int], gen: list[int], stops: Sequence[int]) -> None:
        context = prompt[len(self.ids):]
        if self.ids and prompt[:len(self.ids)] != self.ids:
            # The re-rendered history tokenizes differently from what was sampled: keep the
            # sampled tokens and take from the new prompt what follows the stop token that ended
            # the last turn (the observation and the next role token); without one, restart.
            self.restarts += 1
            last = self.ids[-1]
            if last in stops and last in prompt:
                context = prompt[len(prompt) - prompt[::-1].index(last):]
            else:
                self.ids, self.generated, context = [], [], prompt
        self.ids += context + gen
        self.generated += [False] * len(context) + [True] * len(gen)


class TurnBatcher:
    """Decodes one turn for each of ``n`` concurrent callers as one batch (see module docstring).

    ``member(i).stream(...)`` blocks until the thread running :meth:`serve` has decoded a round:
    that happens when every caller still running has asked for its turn (or left with
    :meth:`leave`). Rows are ordered by member index and seeded per round, so a run is
    reproducible whatever the threads' timing; decoding stays on one thread, so its large
    temporary tensors come from one allocator arena rather than one per agent thread.
    """

    def __init__(self, model, tok, sampling: Sampling, n: int, rollouts: list[Rollout]):
        self.model, self.tok, self.sampling = model, tok, sampling
        self.active, self.rollouts, self.round = n, rollouts, 0
        self.pending: dict[int, tuple[list[int], int]] = {}
        self.results: dict[int, tuple[list[int], str] | BaseException] = {}
        self.cond = threading.Condition()
        self.stops = list(tok.stop_ids)

    def member(self, i: int) -> Backend:
        return _Member(self, i)

    def turn(self, i: int, ids: list[int], max_tokens: int) -> tuple[list[int], str]:
        with self.cond:
            self.pending[i] = (ids, max_tokens)
            self.cond.notify_all()
            while i not in self.results:
                self.cond.wait()
            out = self.results.pop(i)
        if isinstance(out, BaseException):
            raise out
        return out

    def leave(self) -> None:
        with self.cond:
            self.active -= 1
            self.cond.notify_all()

    def serve(self) -> None:
        """Decode rounds until every caller has left."""
        with self.cond:
            while True:
                while self.active and len(self.pending) < self.active:
                    self.cond.wait()
                if not self.active:
                    return
                order = sorted(self.pending)
                requests = [self.pending.pop(i) for i in order]
                try:
                    outs = self._decode(requests)
                except Exception as e:  # noqa: BLE001 - every waiting member re-raises it
                    outs = [e] * len(order)
                self.results.update(zip(order, outs))
                self.round += 1
                self.cond.notify_all()

    def _decode(self, requests: list[tuple[list[int], int]]) -> list[tuple[list[int], str]]:
        seed = None if self.sampling.seed is None else self.sampling.seed * 1000003 + self.round
        sampling = Sampling(self.sampling.temperature, self.sampling.top_k, self.sampling.top_p,
                            self.sampling.repetition_penalty, seed)
        limits = [m for _, m in requests]
        rows: list[list[int]] = [[] for _ in requests]
        reasons = ["length"] * len(requests)
        live = [True] * len(requests)
        for tokens in generate_ids(self.model, [ids for ids, _ in requests], max(limits), sampling, self.stops,
                                   self.tok.pad_id):
            for b, t in enumerate(tokens):
                if t is None or not live[b]:
                    continue
                rows[b].append(t)
                if t in self.stops:
                    live[b], reasons[b] = False, "stop"
                elif len(rows[b]) >= limits[b]:
                    live[b] = False
            if not any(live):
                break
        return list(zip(rows, reasons))


class _Member(Backend):
    """One caller's backend: renders like LocalBackend, decodes through the shared batch."""

    def __init__(self, batcher: TurnBatcher, index: int):
        self.batcher, self.index = batcher, index

    def stream(self, messages, tools, *, max_tokens, allow_multiple=False):
        tok = self.batcher.tok
        ids = tok.encode_chat(list(messages), tools=list(tools) or None)
        room = self.batcher.model.config.max_seq_len - len(ids)
        gen, reason = self.batcher.turn(self.index, ids, max(1, min(max_tokens, room)))
        self.batcher.rollouts[self.index].add_turn(ids, gen, self.batcher.stops)
        body = [t for t in gen if t not in self.batcher.stops]
        text = tok.decode(body)
        yield Generation(text, len(gen), reason)


def prompt_tools(record: dict) -> list[dict]:
    """The tools offered by the prompt's system message (or the record's ``tools``)."""
    for m in record["prompt"]:
        if m.get("role") == "system" and m.get("tools"):
            return list(m["tools"])
    return list(record.get("tools") or [])


def _run_agent(member: Backend, record: dict, limits: Limits, workdir: str, python) -> Sample:
    """One agent run on the prompt's last user message, with its history before it."""
    specs = prompt_tools(record)
    offered = {tool_name(s): s for s in specs}
    tools = make_tools(specs, workdir, python)
    agent = Agent(member, tools, limits=limits)
    history = [m for m in record["prompt"][:-1] if not (m.get("role") == "system" and m.get("tools"))]
    agent.messages = [Message.from_dict(m) for m in history]
    calls, final = [], None
    try:
        for event in agent.run(record["prompt"][-1]["content"]):
            if isinstance(event, ToolCallEvent):
                calls.append({"name": event.name, "arguments": event.arguments,
                              "valid": call_is_valid(event.name, event.arguments, offered)})
            elif isinstance(event, FinalEvent):
                final = event
    finally:
        for tool in tools:
            if tool is not python:
                tool.close()
    reply = [m.to_dict() for m in agent.messages[len(history) + 1:]]
    return Sample(record, reply, final.content, final.reason, calls, final.tokens)


class SharedTool(Tool):
    """A tool that concurrent agent runs share (one Python kernel), one call at a time."""

    def __init__(self, tool: Tool):
        self.tool, self.lock = tool, threading.Lock()
        self.name, self.timeout_s, self.needs_confirmation = tool.name, tool.timeout_s, tool.needs_confirmation

    def spec(self) -> dict:
        return self.tool.spec()

    def run(self, arguments):
        with self.lock:
            return self.tool.run(arguments)


def _run_single(member: Backend, record: dict, max_tokens: int) -> Sample:
    """One generated assistant turn (tools shown, never run)."""
    specs = prompt_tools(record)
    offered = {tool_name(s): s for s in specs}
    messages = [Message.from_dict(m) for m in record["prompt"] if not (m.get("role") == "system" and m.get("tools"))]
    gen = next(g for g in member.stream(messages, specs, max_tokens=max_tokens) if isinstance(g, Generation))
    parsed = parse_assistant(gen.text)
    calls = [{"name": c.name, "arguments": c.arguments, "valid": call_is_valid(c.name, c.arguments, offered)}
             for c in parsed.tool_calls]
    if parsed.error:
        calls.append({"name": "", "arguments": gen.text, "valid": False})
    reason = {"stop": "answer"}.get(gen.finish_reason, "max_tokens")
    reply = [{"role": "assistant", "content": gen.text}]
    return Sample(record, reply, "" if calls else parsed.content, reason, calls, gen.tokens)


def collect(model, tok, records: Sequence[dict], group_size: int, sampling: Sampling, *, mode: str = "single",
            limits: Limits | None = None, python=None) -> list[Rollout]:
    """``group_size`` rollouts of every record, all decoded together; rollout k answers
    ``records[k // group_size]``. ``mode``: "single" (one turn) or "agent" (the agent loop)."""
    limits = limits or Limits(max_steps=4, max_turn_tokens=128, max_seconds=120)
    rollouts = [Rollout(k // group_size) for k in range(len(records) * group_size)]
    batcher = TurnBatcher(model, tok, sampling, len(rollouts), rollouts)
    errors: list[BaseException] = []

    def work(k: int, workdir: str) -> None:
        member = batcher.member(k)
        try:
            record = records[k // group_size]
            rollouts[k].sample = (_run_agent(member, record, limits, workdir, shared) if mode == "agent"
                                  else _run_single(member, record, limits.max_turn_tokens))
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(e)
        finally:
            batcher.leave()

    shared = SharedTool(python) if python is not None else None
    with tempfile.TemporaryDirectory() as workdir:
        threads = [threading.Thread(target=work, args=(k, workdir), daemon=True) for k in range(len(rollouts))]
        for t in threads:
            t.start()
        batcher.serve()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    return rollouts
