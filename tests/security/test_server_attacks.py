"""Attacks on `openglm serve` over real HTTP: clients that vanish, out-of-range fields, malformed
bodies, and requests that try to skip the key. After each one the server answers a normal request."""

import json
import socket
import threading
import time
from urllib.parse import urlsplit

import httpx
import openai
import pytest
from live_server import KEY

AUTH = {"Authorization": f"Bearer {KEY}"}
HELLO = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}


def post(url, body, **kw) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=AUTH, timeout=60, trust_env=False, **kw)


def assert_answers_quickly(url, limit_s: float = 3.0) -> None:
    start = time.monotonic()
    r = post(url, HELLO)
    assert r.status_code == 200, r.text
    assert time.monotonic() - start < limit_s, f"the next request waited {time.monotonic() - start:.1f} s"


def raw_request(url: str, body: bytes, headers: dict | None = None) -> socket.socket:
    """Send a POST by hand and return the open socket (the caller reads some of it, then cuts it)."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    head = {"Host": parts.netloc, "Content-Type": "application/json", "Content-Length": str(len(body)), **AUTH,
            **(headers or {})}
    sock.sendall(("POST /v1/chat/completions HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items())
                  + "\r\n").encode() + body)
    return sock


LONG = json.dumps({"messages": [{"role": "user", "content": "write"}], "max_tokens": 1900}).encode()


def test_a_client_that_leaves_mid_stream_frees_the_model_at_once(server_url):
    """The reported attack: `curl -m 1` cut a stream and the next request waited 5 s to minutes."""
    sock = raw_request(server_url, json.dumps({**json.loads(LONG), "stream": True}).encode())
    received = b""
    while received.count(b"data:") < 5:  # the stream is running: some tokens arrived
        received += sock.recv(4096)
    sock.close()
    assert_answers_quickly(server_url)


def test_a_client_that_leaves_a_long_plain_request_frees_the_model(server_url):
    sock = raw_request(server_url, LONG)
    time.sleep(0.5)  # generation under way, no byte of the answer sent yet
    sock.close()
    assert_answers_quickly(server_url)


def test_a_client_that_leaves_while_waiting_its_turn_never_runs(server_url):
    first = raw_request(server_url, LONG)
    time.sleep(0.3)
    waiting = [raw_request(server_url, LONG) for _ in range(3)]
    time.sleep(0.3)
    for sock in waiting + [first]:
        sock.close()
    assert_answers_quickly(server_url)


def test_many_vanishing_streams_leave_the_server_working(server_url):
    def hit():
        sock = raw_request(server_url, json.dumps({**json.loads(LONG), "stream": True}).encode())
        sock.recv(64)
        sock.close()

    threads = [threading.Thread(target=hit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert_answers_quickly(server_url, limit_s=5.0)


@pytest.mark.parametrize("field, value", [
    ("seed", 18446744073709551616), ("seed", -(1 << 63) - 1), ("max_tokens", 10 ** 30), ("max_tokens", 0),
    ("max_completion_tokens", -5), ("temperature", float("nan")), ("top_p", float("inf")), ("n", 2),
    ("stop", ["x"] * 100), ("stop", "y" * 1000), ("tool_choice", "required"), ("stream", "yes"),
])
def test_every_field_is_checked_to_its_range(server_url, field, value):
    body = json.dumps({**HELLO, field: value}).encode()  # NaN and Infinity as Python's json writes them
    r = httpx.post(f"{server_url}/v1/chat/completions", content=body, trust_env=False,
                   headers={**AUTH, "Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and field in error["message"] and error["param"] == field


def test_a_seed_at_the_edge_of_its_range_works(server_url):
    for seed in (0, (1 << 64) - 1, -(1 << 63)):
        assert post(server_url, {**HELLO, "seed": seed, "temperature": 1.0}).status_code == 200


@pytest.mark.parametrize("messages", [
    [1], ["text"], [{"role": "user", "content": {"a": 1}}], [{"role": "user", "content": [{"type": 5}]}],
    [{"role": 5}], [{"role": "assistant", "tool_calls": [{"function": 3}]}],
    [{"role": "assistant", "tool_calls": "x"}, {"role": "user", "content": "hi"}],
])
def test_messages_of_any_wrong_shape_are_a_400(server_url, messages):
    r = post(server_url, {"messages": messages, "max_tokens": 2})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"].startswith("messages")


@pytest.mark.parametrize("tools", [[1], [{"type": "function"}], [{"type": "function", "function": {"name": 5}}]])
def test_tools_of_any_wrong_shape_are_a_400(server_url, tools):
    r = post(server_url, {**HELLO, "tools": tools})
    assert r.status_code == 400, r.text
    assert "error" in r.json()


@pytest.mark.parametrize("body", [b"\xff\xfe{not utf-8}", b"[" * 100_000 + b"]" * 100_000, b'{"messages": [',
                                  b"null", b"[]", b'"text"'])
def test_unreadable_bodies_get_an_openai_error(server_url, body):
    r = httpx.post(f"{server_url}/v1/chat/completions", content=body, trust_env=False,
                   headers={**AUTH, "Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert_answers_quickly(server_url)


def test_a_huge_body_is_refused_before_it_is_read(server_url):
    r = httpx.post(f"{server_url}/v1/chat/completions", content=b" " * (9 << 20), trust_env=False,
                   headers={**AUTH, "Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_unknown_routes_and_methods_get_an_openai_error(server_url):
    for method, path, status in (("GET", "/v1/nothing", 404), ("GET", "/v1/chat/completions", 405)):
        r = httpx.request(method, f"{server_url}{path}", headers=AUTH, trust_env=False)
        assert r.status_code == status and "message" in r.json()["error"]


@pytest.mark.parametrize("header", [KEY, f"Basic {KEY}", f"Bearer{KEY}", f"Token {KEY}", "Bearer", "",
                                    f"Bearer {KEY}x", f"Bearer {KEY[:-1]}"])
@pytest.mark.parametrize("path", ["/v1/models", "/docs", "/openapi.json", "/redoc", "/v1/nothing"])
def test_every_route_but_health_wants_the_bearer_key(server_url, header, path):
    r = httpx.get(f"{server_url}{path}", headers={"Authorization": header} if header else {}, trust_env=False)
    assert r.status_code == 401, (path, header, r.status_code)
    assert r.json()["error"]["code"] == "invalid_api_key"
    assert KEY not in r.text


def test_the_right_key_opens_the_routes_and_health_is_open(server_url):
    for header in (f"Bearer {KEY}", f"bearer {KEY}"):
        assert httpx.get(f"{server_url}/v1/models", headers={"Authorization": header}, trust_env=False).is_success
    assert httpx.get(f"{server_url}/openapi.json", headers=AUTH, trust_env=False).is_success
    assert httpx.get(f"{server_url}/health", trust_env=False).json()["status"] == "ok"
    client = openai.OpenAI(base_url=f"{server_url}/v1", api_key=KEY, max_retries=0)
    assert client.chat.completions.create(model="x", **HELLO).choices[0].message.role == "assistant"


def test_sigterm_stops_the_cli_server_during_a_generation(tmp_path):
    """`openglm serve` exits promptly on SIGTERM while a stream is running and another client has vanished."""
    import signal
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", "from openglm.cli import app; app()", "serve", "--preset", "nano",
                             "--port", str(port), "--api-key", KEY], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(f"{url}/health", trust_env=False).is_success:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        gone = raw_request(url, json.dumps({**json.loads(LONG), "stream": True}).encode())
        gone.recv(64)
        gone.close()
        live = raw_request(url, json.dumps({**json.loads(LONG), "stream": True}).encode())
        assert live.recv(64)
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        assert time.monotonic() - start < 15
        live.close()
    finally:
        proc.kill()
        proc.wait()
    assert KEY not in proc.stdout.read().decode(errors="replace")
