"""An OpenAI-compatible HTTP API over one local model: protocol conversion around LocalBackend.

    app = create_app(model, tok, name="glm-4-9b-chat")   # uvicorn.run(app) or `openglm serve`

Endpoints: GET /v1/models, POST /v1/chat/completions (messages, tools, tool_choice "auto" or
"none", max_tokens, temperature, top_p, seed, stop, stream). One model is served, whatever
`model` a request names (as llama.cpp's server does; replies carry the served name). Requests take turns on the model
(one CPU model runs one generation at a time) and share its PromptCache, so a client that
resends a growing conversation only pays for the new turn. Bad requests get a 400 with an
OpenAI-style error naming the field; nothing a request sends can stop the server. A client that
goes away (mid-stream, or while its request waits or runs) stops its generation at the next
token and frees the model for the others. A failure
inside generation is a 500 in the same shape, or, once a stream has begun, a last event holding
the error (which OpenAI's clients raise) before `[DONE]`, instead of a cut connection.

Streaming sends text deltas as they decode. When tools are offered the reply may be a call,
whose text is GLM-4 syntax, not content: those replies are parsed first and sent as one chunk.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import time
import uuid
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.responses import StreamingResponse

from ..agent.backends import BackendError, Generation, LocalBackend
from ..chat import from_openai, parse_assistant, to_openai
from ..infer import ContextLengthError, PromptCache
from ..infer.generate import StopStrings

log = logging.getLogger("openglm.serve")


MAX_BODY_BYTES = 8 << 20  # a larger request is refused (413) before it is read whole
MAX_TOKENS = 1 << 20  # no model here has a longer context; larger budgets are a 400, not an overflow
POLL_S = 0.1  # how often a waiting or running request checks that its client is still there


class ChatRequest(BaseModel):
    model: str | None = Field(None, max_length=256)
    messages: list[dict[str, Any]] = Field(min_length=1, max_length=4096)
    tools: list[dict[str, Any]] | None = Field(None, max_length=256)
    tool_choice: Literal["auto", "none"] | None = None
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    temperature: float = Field(0.0, ge=0.0, le=2.0, allow_inf_nan=False)  # greedy unless asked: reproducible
    top_p: float = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    seed: int | None = Field(None, ge=-(1 << 63), lt=1 << 64)  # what torch's generator accepts
    stop: Annotated[str, Field(max_length=256)] | list[Annotated[str, Field(max_length=256)]] | None = Field(
        None, max_length=16)
    stream: bool = Field(False, strict=True)
    n: Literal[1] = 1


class ClientGone(Exception):
    """The client disconnected: its generation stops."""


class BadRequest(ValueError):
    """A request the server cannot serve, with the offending field."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class Engine:
    """One model behind a lock, with the prompt cache its requests share."""

    def __init__(self, model, tok, max_tokens: int = 1024):
        self.model, self.tok, self.default_max_tokens = model, tok, max_tokens
        self.lock = threading.Lock()
        self.cache = PromptCache()

    def run(self, req: ChatRequest, gone: threading.Event):
        """Yield text deltas (when streamable), then the finished OpenAI message, finish reason and usage.

        Raises ClientGone as soon as ``gone`` is set: while waiting for the model, or at the next token."""
        try:
            messages = from_openai(req.messages, req.tools if req.tools and req.tool_choice != "none" else None)
        except (ValueError, TypeError, KeyError, AttributeError) as e:  # any shape the converter cannot read
            raise BadRequest(f"cannot read the messages or tools: {e}", "messages") from None
        tools = messages.pop(0).tools if messages and messages[0].tools else []
        stopper = StopStrings([req.stop] if isinstance(req.stop, str) else req.stop or [])
        backend = LocalBackend(self.model, self.tok, temperature=req.temperature, top_p=req.top_p, seed=req.seed,
                               reuse_prompts=self.cache)
        budget = req.max_completion_tokens or req.max_tokens or self.default_max_tokens
        live = not tools and not stopper.stops  # else the text is checked whole before any of it is sent
        while not self.lock.acquire(timeout=POLL_S):
            if gone.is_set():
                raise ClientGone
        try:
            counted = self.cache.reused + self.cache.prefilled  # the cache counts this prompt's tokens
            try:
                text, gen = yield from _decode(backend.stream(messages, tools, max_tokens=budget, allow_multiple=True),
                                               stopper, live, gone)
            except (BackendError, ContextLengthError) as e:
                raise BadRequest(str(e), "messages") from None
            prompt_tokens = self.cache.reused + self.cache.prefilled - counted
        finally:
            self.lock.release()
        reply = parse_assistant(text, allow_multiple=True)
        message = {"role": "assistant", "content": text} if reply.error else to_openai(reply)
        cut = gen.finish_reason in ("length", "repetition")  # OpenAI has no reason for a reply stopped in a loop
        reason = "tool_calls" if message.get("tool_calls") else ("length" if cut else "stop")
        completion = gen.tokens or len(self.tok.encode(text))  # a stop-string cut counts the text kept
        yield message, reason, {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                                "total_tokens": prompt_tokens + completion}


def _decode(items, stopper: StopStrings, live: bool, gone: threading.Event):
    """Yield a reply's content as it decodes (when ``live``); returns its whole text and Generation."""
    text, sent = "", 0
    for item in items:
        if gone.is_set():
            raise ClientGone
        if isinstance(item, Generation):
            return text + stopper.flush(), item
        text += stopper.feed(item)
        if stopper.hit:
            return text, Generation(text, 0, "stop")
        if live:  # the empty metadata line that opens a GLM-4 text reply is not content
            content = text.removeprefix("\n")
            if content[sent:]:
                yield content[sent:]
                sent = len(content)
    raise RuntimeError("the backend ended without a Generation")


def create_app(model, tok, name: str = "openglm", max_tokens: int = 1024, api_key: str | None = None):
    """A FastAPI app serving `model` under the model id `name`; with api_key, every route but /health wants
    `Authorization: Bearer <api_key>` (the key is compared in constant time and never logged)."""
    app = FastAPI(title="openglm", version="1")
    app.state.engine, app.state.name, app.state.api_key = Engine(model, tok, max_tokens), name, api_key
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    app.middleware("http")(_authorize)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(BadRequest, _bad_request)
    app.include_router(routes)
    return app


routes = APIRouter()


@routes.get("/health")
def health(request: Request):
    return {"status": "ok", "model": request.app.state.name}


@routes.get("/v1/models")
def models(request: Request):
    return {"object": "list", "data": [{"id": request.app.state.name, "object": "model", "created": 0,
                                        "owned_by": "openglm"}]}


@routes.post("/v1/chat/completions")
async def chat(req: ChatRequest, request: Request):
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": request.app.state.name}
    gone = threading.Event()
    run = request.app.state.engine.run(req, gone)  # advanced in worker threads, one step at a time
    watcher = asyncio.get_running_loop().create_task(_watch_disconnect(request.receive, gone))

    async def finish():
        """Stop and close the generation (releasing the model) however the response ended."""
        gone.set()
        watcher.cancel()
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(run.close)

    streaming = False
    try:  # a bad request raises here, as a 400, before any streaming; any other failure is a 500
        first = await anyio.to_thread.run_sync(next, run, None)
        if req.stream:
            streaming = True
            return _Stream(_events(head, first, run), finish, media_type="text/event-stream")
        *_, (message, reason, usage) = [first] + await anyio.to_thread.run_sync(list, run)
        return {**head, "object": "chat.completion", "usage": usage,
                "choices": [{"index": 0, "message": message, "finish_reason": reason}]}
    except BadRequest:
        raise
    except ClientGone:
        return Response(status_code=499)  # nobody is left to read it; the access log shows it
    except Exception as exc:  # answered here: an app-level handler makes Starlette drop the connection
        log.exception("generation failed")
        return JSONResponse({"error": _server_error(exc)}, status_code=500)
    finally:
        if not streaming:
            await finish()


def _error(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "param": param,
                                   "code": code}}, status_code=status)


async def _authorize(request: Request, call_next):
    api_key = request.app.state.api_key
    if api_key and request.url.path != "/health":
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), api_key.encode()):
            return _error(401, "missing or wrong API key (send Authorization: Bearer <key>)", code="invalid_api_key")
    return await call_next(request)


async def _invalid_request(_: Request, exc: RequestValidationError):
    first = exc.errors()[0]
    # field names and indices only: pydantic adds union members ("constrained-str") to the path
    where = ".".join(str(p) for p in first["loc"][1:] if isinstance(p, int) or p.isidentifier())
    return _error(400, f"{where}: {first['msg']}" if where else first["msg"], where or None)


async def _http_error(_: Request, exc: HTTPException):  # unreadable bodies, unknown routes, wrong methods
    return _error(exc.status_code, str(exc.detail))


async def _bad_request(_: Request, exc: BadRequest):
    return _error(400, str(exc), exc.param)


async def _events(head: dict, first, run):
    """The SSE events of one streamed completion; `run` is advanced in a worker thread."""
    chunk = {**head, "object": "chat.completion.chunk"}
    yield _sse({**chunk, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]})
    sent, item = False, first
    try:
        while item is not None:
            if isinstance(item, str):
                sent = True
                yield _sse({**chunk, "choices": [{"index": 0, "delta": {"content": item}, "finish_reason": None}]})
            else:
                message, reason, usage = item
                delta = {} if sent else {"content": message["content"]}
                if message.get("tool_calls"):
                    delta["tool_calls"] = [{"index": i, **c} for i, c in enumerate(message["tool_calls"])]
                choice = {"index": 0, "delta": delta, "finish_reason": reason}
                yield _sse({**chunk, "usage": usage, "choices": [choice]})
            item = await anyio.to_thread.run_sync(next, run, None)
    except ClientGone:
        return
    except Exception as exc:  # the 200 is sent: the error becomes the stream's last event
        log.exception("generation failed mid-stream")
        yield _sse({"error": _server_error(exc)})
    yield "data: [DONE]\n\n"


async def _watch_disconnect(receive, gone: threading.Event) -> None:
    """Set `gone` when the client disconnects (the request body has been read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    gone.set()


class _Stream(StreamingResponse):
    """A streaming response that runs `on_close` however it ends: done, client gone, or cancelled."""

    def __init__(self, body, on_close, media_type: str):
        super().__init__(body, media_type=media_type)
        self.on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.on_close()


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` is refused (413 when it says its length up front)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_bytes:
            response = _error(413, f"the request body must be at most {self.max_bytes:,} bytes",
                              code="request_too_large")
            return await response(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:  # a chunked body that grew past the limit: unreadable, so a 400
                raise ValueError("request body too large")
            return message

        return await self.app(scope, limited, send)


def _server_error(exc: Exception) -> dict:
    if isinstance(exc, BadRequest):
        return {"message": str(exc), "type": "invalid_request_error", "param": exc.param, "code": None}
    return {"message": f"generation failed: {type(exc).__name__}: {exc}", "type": "server_error", "param": None,
            "code": None}


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"
