"""Shared helpers for the agent tests: fixture paths and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
DOCS = FIXTURES / "docs"

# A handler gets the request and returns (status, headers, body); a dict body is sent as JSON.
Handler = Callable[[dict], tuple[int, dict, bytes | str | dict]]


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 with per-path handlers; it records every request."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Handler] = {}
        self.requests: list[dict] = []
        server = self

        class RequestHandler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = {"method": self.command, "path": parts.path, "query": parse_qs(parts.query),
                           "headers": dict(self.headers), "body": body}
                try:
                    request["json"] = json.loads(body) if body else None
                except ValueError:
                    request["json"] = None
                server.requests.append(request)
                handler = server.routes.get((self.command, parts.path))
                status, headers, payload = handler(request) if handler else (404, {}, "not found")
                if isinstance(payload, dict | list):
                    payload, headers = json.dumps(payload), {"Content-Type": "application/json", **headers}
                data = payload.encode() if isinstance(payload, str) else payload
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def log_message(self, *args) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address) -> None:
                # a client that gave up (timeout tests) is expected; keep stderr clean for CLI captures
                server.errors.append(client_address)

        self.errors: list = []
        self.httpd = Server(("127.0.0.1", 0), RequestHandler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def route(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method, path)] = handler

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def http_server():
    server = LoopbackServer()
    yield server
    server.close()
