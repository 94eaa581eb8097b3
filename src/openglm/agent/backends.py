"""Model backends: "the next assistant turn for this conversation and these tools".

Each backend's :meth:`Backend.stream` yields text deltas (``str``) and finally
one :class:`Generation`, whose ``text`` is the turn in GLM-4 form (what the
model writes after ``<|assistant|>``: ``metadata\\nbody``, several segments
joined by ``<|assistant|>``), so the agent handles every backend alike.

- :class:`LocalBackend`: an openglm model and tokenizer, in process.
- :class:`OpenAIBackend`: any OpenAI-compatible chat-completions server (vLLM
  serving glm-4-9b-chat, an API), with ``tools`` / ``tool_calls``.
- :class:`ReplayBackend`: scripted turns pushed through the real tokenizer,
  for tests and demos.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from openglm.chat import Message, from_openai, to_openai_messages
from openglm.chat.parse import parse_tool_call
from openglm.chat.protocol import BUILTIN_TOOL_DESCRIPTIONS, role_token

if TYPE_CHECKING:  # openglm.infer imports torch; an --endpoint agent never needs it
    from openglm.infer import PromptCache

ASSISTANT = role_token("assistant")


class BackendError(RuntimeError):
    """The model could not produce a turn (server error, prompt longer than the context, ...)."""


@dataclass
class Generation:
    text: str                    # the turn in GLM-4 form
    tokens: int                  # tokens generated
    finish_reason: str = "stop"  # "stop", "length" or "repetition" (the reply went round in a loop)


def looping(tokens: Sequence[int], max_period: int = 48, min_span: int = 64, min_repeats: int = 4) -> bool:
    """Whether the tail of ``tokens`` is one block of up to ``max_period`` tokens repeated back to back,
    at least ``min_repeats`` times and over ``min_span`` tokens: a loop a small model does not leave."""
    for period in range(1, max_period + 1):
        span = max(min_span, min_repeats * period)
        if len(tokens) < span:
            break
        if tokens[-span + period:] == tokens[-span:-period]:
            return True
    return False


class Backend:
    def stream(self, messages: Sequence[Message], tools: Sequence[dict], *, max_tokens: int,
               allow_multiple: bool = False) -> Iterator[str | Generation]:
        raise NotImplementedError


class LocalBackend(Backend):
    """Generate with an openglm model: render -> tokenize -> KV-cached decoding, stopping at the stop tokens."""

    def __init__(self, model, tokenizer, *, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                 repetition_penalty: float = 1.0, seed: int | None = None, guided_tools: bool = True,
                 reuse_prompts: bool | PromptCache = True):
        from openglm.infer import PromptCache, Sampling

        self.model, self.tok = model, tokenizer
        self.sampling = Sampling(temperature, top_k, top_p, repetition_penalty, seed)
        # replies are text or calls of offered tools with arguments that parse (infer.constrain)
        self.guided_tools = guided_tools
        # each turn's prompt extends the last one (and all share the system prompt): compute only the new
        # part. A PromptCache given here is shared (e.g. by a server's requests); True makes one of its own.
        if isinstance(reuse_prompts, PromptCache):
            self.prompt_cache = reuse_prompts
        else:
            self.prompt_cache = PromptCache() if reuse_prompts else None

    def stream(self, messages, tools, *, max_tokens, allow_multiple=False):
        from openglm.infer import generate_ids
        from openglm.infer.constrain import ToolGrammar

        ids = self.tok.encode_chat(list(messages), tools=list(tools) or None)
        room = self.model.config.max_seq_len - len(ids)
        if room < 1:
            raise BackendError(f"the conversation has {len(ids)} tokens, the model's context is "
                               f"{self.model.config.max_seq_len}")
        stops = set(self.tok.stop_ids)
        # Specials are kept: a second <|assistant|> separates calls of one turn.
        decoder = self.tok.stream_decoder(skip_special=False)
        text, n, reason, made = "", 0, "length", []
        constraint = ToolGrammar(self.tok, list(tools)) if self.guided_tools else None
        for (token,) in generate_ids(self.model, [ids], min(max_tokens, room), self.sampling, list(stops),
                                     self.tok.pad_id, constraint, self.prompt_cache):
            n += 1
            if token in stops:
                reason = "stop"
                break
            made.append(token)
            if looping(made):
                reason = "repetition"
                break
            delta = decoder.push(token)
            if delta:
                text += delta
                yield delta
        tail = decoder.flush()
        if tail:
            yield tail
        yield Generation(text + tail, n, reason)


class ReplayBackend(Backend):
    """Replays scripted turns (GLM-4 text) as if a model wrote them.

    Each request is rendered and tokenized with ``tokenizer`` like a real
    prompt (kept in ``prompts``), and each scripted turn is encoded to token ids
    and streamed back through the tokenizer's decoder, so the real
    render/tokenize/decode path runs.  ``script`` may be endless (e.g. a
    generator); running out raises :class:`BackendError`.
    """

    def __init__(self, script: Iterable[str], tokenizer=None):
        from openglm.tokenizer import default_tokenizer

        self._script = iter(script)
        self.tok = tokenizer or default_tokenizer()
        self.prompts: list[list[int]] = []
        self.replies = 0

    def stream(self, messages, tools, *, max_tokens, allow_multiple=False):
        self.prompts.append(self.tok.encode_chat(list(messages), tools=list(tools) or None))
        try:
            turn = next(self._script)
        except StopIteration:
            raise BackendError(f"replay script exhausted after {self.replies} turns") from None
        self.replies += 1
        all_ids = self.tok.encode(turn, allow_special={ASSISTANT})
        ids = all_ids[:max_tokens]
        decoder = self.tok.stream_decoder()
        text = ""
        for token in ids:
            delta = decoder.push(token)
            if delta:
                text += delta
                yield delta
        text += decoder.flush()
        yield Generation(text, len(ids), "stop" if len(ids) == len(all_ids) else "length")


# Built-in tools have no JSON schema in GLM-4; on the OpenAI wire they become functions whose
# arguments wrap the text input, as openglm.chat.from_openai expects.
_WIRE_PARAMETERS = {
    "python": {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]},
    "cogview": {"type": "object", "properties": {"prompt": {"type": "string"}}, "required": ["prompt"]},
    "simple_browser": {
        "type": "object",
        "properties": {"function": {"type": "string", "enum": ["search", "mclick", "open_url"]},
                       "args": {"type": "array"}, "kwargs": {"type": "object"}},
        "required": ["function", "args", "kwargs"],
    },
}
_PLACEHOLDER = {"python": "pass", "cogview": "image", "simple_browser": 'open_url("")'}


class OpenAIBackend(Backend):
    """An OpenAI-compatible ``/chat/completions`` endpoint.

    ``base_url`` is the API root (e.g. ``http://127.0.0.1:8000/v1``).  The key
    is only sent in the ``Authorization`` header, never shown.
    """

    def __init__(self, base_url: str, api_key: str | None = None, model: str = "glm-4-9b-chat", *,
                 temperature: float | None = None, timeout_s: float = 300.0, extra_body: dict | None = None):
        import httpx

        self.base_url = base_url.rstrip("/").removesuffix("/chat/completions")
        self.model, self.temperature, self.extra_body = model, temperature, dict(extra_body or {})
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(timeout=timeout_s, headers=headers, trust_env=True)

    def __repr__(self) -> str:
        return f"OpenAIBackend(base_url={self.base_url!r}, model={self.model!r})"

    def stream(self, messages, tools, *, max_tokens, allow_multiple=False):
        import httpx

        wire, wire_tools = to_wire(messages, tools)
        body = {"model": self.model, "messages": wire, "max_tokens": max_tokens, **self.extra_body}
        if wire_tools:
            body["tools"] = wire_tools
            body["parallel_tool_calls"] = allow_multiple
        if self.temperature is not None:
            body["temperature"] = self.temperature
        url = f"{self.base_url}/chat/completions"
        try:
            r = self._http.post(url, json=body)
        except httpx.HTTPError as e:
            raise BackendError(f"{url}: {type(e).__name__}: {e}") from None
        if r.status_code >= 400:
            raise BackendError(f"{url} answered HTTP {r.status_code}: {r.text[:500]}")
        try:
            data = r.json()
            choice = data["choices"][0]
            message = choice["message"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise BackendError(f"{url} did not answer a chat completion: {r.text[:500]}") from None
        text = glm_text(message)
        if message.get("content"):
            yield "\n" + message["content"]  # a turn's text starts after its (empty) metadata line
        tokens = (data.get("usage") or {}).get("completion_tokens") or 0
        yield Generation(text, tokens, "length" if choice.get("finish_reason") == "length" else "stop")

    def close(self) -> None:
        self._http.close()


def glm_text(message: dict) -> str:
    """An OpenAI assistant message as GLM-4 turn text; malformed calls are kept verbatim for the parser to report."""
    segments = [f"\n{message['content']}"] if message.get("content") else []
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        try:
            (glm,) = [m for m in from_openai([{"role": "assistant", "tool_calls": [call]}]) if m.metadata]
            segments.append(f"{glm.metadata}\n{glm.content}")
        except ValueError:
            segments.append(f"{fn.get('name') or 'unnamed'}\n{fn.get('arguments', '')}")
    return ASSISTANT.join(segments) if segments else "\n"


def to_wire(messages: Sequence[Message], tools: Sequence[dict]) -> tuple[list[dict], list[dict]]:
    """OpenAI ``(messages, tools)`` for a GLM-4 history, via :func:`openglm.chat.to_openai_messages`.

    A call the model wrote malformed (bad JSON) is sent with its raw text as
    ``arguments``, so the model sees what it wrote next to the error observation.
    """
    sane, raw = [], []
    for m in messages:
        if m.role == "assistant" and m.metadata:
            try:
                parse_tool_call(m.metadata.strip(), m.content)
            except ValueError:
                raw.append(m.content)
                body = _PLACEHOLDER.get(m.metadata.strip(), "{}")
                sane.append(Message("assistant", body, metadata=m.metadata.strip()))
                continue
            raw.append(None)
        sane.append(m)
    wire, _ = to_openai_messages(sane)
    calls = [c for w in wire for c in (w.get("tool_calls") or [])]
    for call, text in zip(calls, raw):
        if text is not None:
            call["function"]["arguments"] = text
    return wire, [_wire_tool(t) for t in tools]


def _wire_tool(tool: dict) -> dict:
    kind = tool.get("type")
    if kind in _WIRE_PARAMETERS:
        fn = {"name": kind, "description": BUILTIN_TOOL_DESCRIPTIONS[kind], "parameters": _WIRE_PARAMETERS[kind]}
        return {"type": "function", "function": fn}
    return copy.deepcopy(tool)
