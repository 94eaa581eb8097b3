"""An OpenAI-compatible HTTP API over one local model: protocol conversion around LocalBackend.

    app = create_app(model, tok, name="glm-4-9b-chat")   # uvicorn.run(app) or `openglm serve`

Endpoints: GET /v1/models, POST /v1/chat/completions (messages, tools, tool_choice "auto" or
"none", max_tokens, temperature, top_p, seed, stop, stream). One model is served, whatever
`model` a request names (as llama.cpp's server does; replies carry the served name). Requests take turns on the model
(one CPU model runs one generation at a time) and share its PromptCache, so a client that
resends a growing conversation only pays for the new turn. Bad requests get a 400 with an
OpenAI-style error naming the field; nothing a request sends can stop the server. A failure
inside generation is a 500 in the same shape, or, once a stream has begun, a last event holding
the error (which OpenAI's clients raise) before `[DONE]`, instead of a cut connection.

Streaming sends text deltas as they decode. When tools are offered the reply may be a call,
whose text is GLM-4 syntax, not content: those replies are parsed first and sent as one chunk.
"""

from __future__ import annotations

import itertools
import json
import logging
import secrets
import threading
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, Field

from ..agent.backends import BackendError, Generation, LocalBackend
from ..chat import from_openai, parse_assistant, to_openai
from ..infer import ContextLengthError, PromptCache
from ..infer.generate import StopStrings

log = logging.getLogger("openglm.serve")


class ChatRequest(BaseModel):
    model: str | None = None
    messages: list[dict[str, Any]] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["auto", "none"] | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=2.0)  # greedy unless asked: reproducible answers
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    n: Literal[1] = 1


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

    def run(self, req: ChatRequest):
        """Yield text deltas (when streamable), then the finished OpenAI message, finish reason and usage."""
        try:
            messages = from_openai(req.messages, req.tools if req.tools and req.tool_choice != "none" else None)
        except ValueError as e:
            raise BadRequest(str(e), "messages") from None
        tools = messages.pop(0).tools if messages and messages[0].tools else []
        stopper = StopStrings([req.stop] if isinstance(req.stop, str) else req.stop or [])
        backend = LocalBackend(self.model, self.tok, temperature=req.temperature, top_p=req.top_p, seed=req.seed,
                               reuse_prompts=self.cache)
        budget = req.max_completion_tokens or req.max_tokens or self.default_max_tokens
        live = not tools and not stopper.stops  # else the text is checked whole before any of it is sent
        with self.lock:
            counted = self.cache.reused + self.cache.prefilled  # the cache counts this prompt's tokens
            try:
                text, gen, sent = "", None, 0
                for item in backend.stream(messages, tools, max_tokens=budget, allow_multiple=True):
                    if isinstance(item, Generation):
                        gen, text = item, text + stopper.flush()
                        break
                    text += stopper.feed(item)
                    if stopper.hit:
                        gen = Generation(text, 0, "stop")
                        break
                    if live:  # the empty metadata line that opens a GLM-4 text reply is not content
                        content = text.removeprefix("\n")
                        if content[sent:]:
                            yield content[sent:]
                            sent = len(content)
            except (BackendError, ContextLengthError) as e:
                raise BadRequest(str(e), "messages") from None
            prompt_tokens = self.cache.reused + self.cache.prefilled - counted
        reply = parse_assistant(text, allow_multiple=True)
        message = {"role": "assistant", "content": text} if reply.error else to_openai(reply)
        reason = "tool_calls" if message.get("tool_calls") else ("length" if gen.finish_reason == "length" else "stop")
        completion = gen.tokens or len(self.tok.encode(text))  # a stop-string cut counts the text kept
        yield message, reason, {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                                "total_tokens": prompt_tokens + completion}


def create_app(model, tok, name: str = "openglm", max_tokens: int = 1024, api_key: str | None = None):
    """A FastAPI app serving `model` under the model id `name`; with api_key, the /v1 routes want
    `Authorization: Bearer <api_key>` (the key is compared in constant time and never logged)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse

    engine = Engine(model, tok, max_tokens)
    app = FastAPI(title="openglm", version="1")

    def error(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "param": param,
                                       "code": code}}, status_code=status)

    @app.middleware("http")
    async def authorize(request: Request, call_next):
        if api_key and request.url.path.startswith("/v1/"):
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not secrets.compare_digest(given.encode(), api_key.encode()):
                return error(401, "missing or wrong API key (send Authorization: Bearer <key>)", code="invalid_api_key")
        return await call_next(request)

    @app.get("/health")
    def health():
        return {"status": "ok", "model": name}

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if p != "body")
        return error(400, f"{where}: {first['msg']}", where or None)

    @app.exception_handler(BadRequest)
    async def bad(_: Request, exc: BadRequest):
        return error(400, str(exc), exc.param)


    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "openglm"}]}

    @app.post("/v1/chat/completions")
    def chat(req: ChatRequest):
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": name}
        run = engine.run(req)
        try:  # a bad request raises here, as a 400, before any streaming; any other failure is a 500
            first = next(run)
            if not req.stream:
                *_, (message, reason, usage) = itertools.chain([first], run)
                return {**head, "object": "chat.completion", "usage": usage,
                        "choices": [{"index": 0, "message": message, "finish_reason": reason}]}
        except BadRequest:
            raise
        except Exception as exc:  # answered here: an app-level handler makes Starlette drop the connection
            log.exception("generation failed")
            return JSONResponse({"error": _server_error(exc)}, status_code=500)

        def events():
            chunk = {**head, "object": "chat.completion.chunk"}
            yield _sse({**chunk, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]})
            sent = False
            try:
                for item in itertools.chain([first], run):
                    if isinstance(item, str):
                        sent = True
                        yield _sse({**chunk, "choices": [{"index": 0, "delta": {"content": item},
                                                          "finish_reason": None}]})
                        continue
                    message, reason, usage = item
                    delta = {} if sent else {"content": message["content"]}
                    if message.get("tool_calls"):
                        delta["tool_calls"] = [{"index": i, **c} for i, c in enumerate(message["tool_calls"])]
                    choice = {"index": 0, "delta": delta, "finish_reason": reason}
                    yield _sse({**chunk, "usage": usage, "choices": [choice]})
            except Exception as exc:  # the 200 is sent: the error becomes the stream's last event
                log.exception("generation failed mid-stream")
                yield _sse({"error": _server_error(exc)})
            finally:
                run.close()  # releases the model's lock whatever ended the stream
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def _server_error(exc: Exception) -> dict:
    if isinstance(exc, BadRequest):
        return {"message": str(exc), "type": "invalid_request_error", "param": exc.param, "code": None}
    return {"message": f"generation failed: {type(exc).__name__}: {exc}", "type": "server_error", "param": None,
            "code": None}


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"
