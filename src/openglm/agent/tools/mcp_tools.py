"""Tools served by an MCP server, through the official ``mcp`` SDK (stdio or streamable HTTP).

    with MCPTools("python my_server.py") as server:       # or MCPTools("http://127.0.0.1:8000/mcp")
        agent = Agent(backend, tools=server.tools)

The SDK is async; the agent is not.  A background thread runs one event loop
that holds the connection open for the life of :class:`MCPTools`, and each
call is handed to it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shlex
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .base import Observation, ToolError
from .functions import FunctionTool


class MCPTools:
    """Connect to one MCP server and expose its tools as :class:`FunctionTool`s (``.tools``).

    ``server``: a command line (str or list) started as a stdio server, or an
    ``http(s)://`` URL of a streamable-HTTP server.  Tools not marked read-only
    by the server (``readOnlyHint``) need confirmation.  Image results are saved
    under ``out_dir`` when given.
    """

    def __init__(self, server: str | Sequence[str], *, env: Mapping[str, str] | None = None,
                 headers: Mapping[str, str] | None = None, timeout_s: float = 60.0, connect_timeout_s: float = 30.0,
                 out_dir: str | Path | None = None):
        self.server, self.timeout_s = server, timeout_s
        self.out_dir = Path(out_dir) if out_dir else None
        self._client = _make_client(server, env, headers, timeout_s)
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._listing: list = []
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._serve(),),
                                        name="openglm-mcp", daemon=True)
        self._thread.start()
        if not self._ready.wait(connect_timeout_s):
            self.close()
            raise TimeoutError(f"MCP server {_label(server)} did not answer within {connect_timeout_s:g} s")
        if self._failure is not None:
            self.close()
            raise ConnectionError(f"MCP server {_label(server)}: {self._failure}") from self._failure
        self.tools = [self._tool(t) for t in self._listing]

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        try:
            async with self._client as client:
                cursor = None
                while True:
                    page = await client.list_tools(cursor=cursor)
                    self._listing += page.tools
                    cursor = page.next_cursor
                    if not cursor:
                        break
                self._ready.set()
                await self._stop.wait()
        except BaseException as e:  # noqa: BLE001 - reported to the constructor's caller
            self._failure = e
        finally:
            self._ready.set()

    def _tool(self, spec) -> FunctionTool:
        read_only = bool(spec.annotations and spec.annotations.read_only_hint)

        def call(**arguments) -> Observation:
            return self.call(spec.name, arguments)

        return FunctionTool(spec.name, spec.description or "", spec.input_schema, call,
                            needs_confirmation=not read_only, timeout_s=None)

    def call(self, name: str, arguments: dict[str, Any]) -> Observation:
        """Call tool ``name`` on the server; the result as an observation (``is_error`` if the tool failed)."""
        if self._failure is not None or self._stop is None or self._stop.is_set():
            raise ToolError(f"MCP server {_label(self.server)} is not connected")
        future = asyncio.run_coroutine_threadsafe(self._client.call_tool(name, arguments), self._loop)
        try:
            result = future.result(self.timeout_s + 5)
        except TimeoutError:
            future.cancel()
            raise ToolError(f"MCP tool {name} timed out after {self.timeout_s:g} s") from None
        except Exception as e:  # noqa: BLE001 - protocol errors become error observations
            raise ToolError(f"MCP tool {name} failed: {e}") from None
        return self._observation(name, result)

    def _observation(self, name: str, result) -> Observation:
        parts, files = [], []
        for k, block in enumerate(result.content):
            kind = getattr(block, "type", None)
            if kind == "text":
                parts.append(block.text)
            elif kind == "image" and self.out_dir is not None:
                self.out_dir.mkdir(parents=True, exist_ok=True)
                ext = block.mime_type.split("/")[-1].split("+")[0] or "bin"
                path = self.out_dir / f"mcp-{name}-{len(list(self.out_dir.iterdir()))}-{k}.{ext}"
                path.write_bytes(base64.b64decode(block.data))
                files.append(str(path))
                parts.append(f"[image saved to {path}]")
            else:
                parts.append(f"[{kind} content not shown]")
        if not parts and result.structured_content is not None:
            parts.append(json.dumps(result.structured_content, ensure_ascii=False))
        text = "\n".join(parts) or "(no content)"
        if result.is_error:
            return Observation(f"Error: {text}", is_error=True, files=files)
        return Observation(text, files=files)

    def close(self) -> None:
        if self._thread.is_alive() and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)

    def __enter__(self) -> MCPTools:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _make_client(server: str | Sequence[str], env, headers, timeout_s: float):
    from mcp import Client, StdioServerParameters

    if isinstance(server, str) and server.startswith(("http://", "https://")):
        if headers:
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            transport = streamable_http_client(server, http_client=httpx2.AsyncClient(headers=dict(headers)))
            return Client(transport, read_timeout_seconds=timeout_s)
        return Client(server, read_timeout_seconds=timeout_s)
    argv = shlex.split(server) if isinstance(server, str) else list(server)
    if not argv:
        raise ValueError("empty MCP server command")
    params = StdioServerParameters(command=argv[0], args=argv[1:], env=dict(env) if env else None)
    return Client(params, read_timeout_seconds=timeout_s)


def _label(server: str | Sequence[str]) -> str:
    return server if isinstance(server, str) else shlex.join(server)
