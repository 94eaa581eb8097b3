"""The browser's fetcher under attack: one deadline for the whole fetch, and no address form that reaches a
non-public host.

Slow servers are real sockets on 127.0.0.1 (allow-listed); refused address forms are judged with the default
policy and never connected to.
"""

from __future__ import annotations

import gc
import ipaddress
import os
import socket
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable

import httpcore
import pytest

from openglm.agent.tools import fetch as fetch_module
from openglm.agent.tools.fetch import Fetcher, FetchError
from tests.agent.conftest import LoopbackServer

TIMEOUT = 2.0
LIMIT = 4.0  # the deadline plus slack for a loaded 2-core machine
LOOPBACK = ["127.0.0.1"]
LOOPBACK_IP = ipaddress.ip_address("127.0.0.1")


class RawServer:
    """A TCP server on 127.0.0.1 whose every connection is handled by ``script(conn, stop)``."""

    def __init__(self, script: Callable[[socket.socket, threading.Event], None], backlog: int = 16,
                 accept: bool = True):
        self.script, self.stop = script, threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=backlog)
        self.port = self.sock.getsockname()[1]
        self.threads: list[threading.Thread] = []
        if accept:
            self._spawn(self._accept)

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.05)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(5)
                self.script(conn, self.stop)
            except OSError:  # the client gave up, as it should
                pass

    def url(self, scheme: str = "http", path: str = "/") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(5)
        self.sock.close()


def slow_headers(conn, stop):
    """A status line, then one header line a second (never the blank line that ends the headers)."""
    conn.recv(65536)
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    for i in range(10):  # bounded, so the old code fails the test instead of hanging it
        if stop.wait(1.0):
            return
        conn.sendall(f"X-Slow-{i}: 1\r\n".encode())


def trickle(head: bytes, byte: bytes):
    """A server script: `head` at once, then one `byte` every half second."""
    def script(conn, stop):
        conn.recv(65536)
        conn.sendall(head)
        for _ in range(20):
            if stop.wait(0.5):
                return
            conn.sendall(byte)
    return script


# headers at once, then the body a byte at a time
slow_body = trickle(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n", b"a")
# a TLS record header answering the ClientHello, then its body a byte at a time
slow_tls = trickle(b"\x16\x03\x03\x40\x00", b"\x02")


def silent(conn, stop):
    """Accepts and reads the request, never answers."""
    conn.recv(65536)
    stop.wait(10)


def slow_redirects(conn, stop):
    """Each hop answers within the per-operation timeouts, but redirects again."""
    conn.recv(65536)
    if not stop.wait(0.8):
        conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: /again\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


@pytest.fixture
def raw_server():
    servers: list[RawServer] = []

    def start(script, **kw) -> RawServer:
        servers.append(RawServer(script, **kw))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def timed_fetch(url: str, **kw) -> tuple[FetchError, float]:
    fetcher = Fetcher(allow=LOOPBACK, timeout_s=TIMEOUT, **kw)
    t0 = time.monotonic()
    try:
        with pytest.raises(FetchError) as err:
            fetcher.fetch(url)
    finally:
        fetcher.close()
    return err.value, time.monotonic() - t0


@pytest.mark.parametrize("script,scheme", [(slow_headers, "http"), (slow_body, "http"), (silent, "http"),
                                           (slow_tls, "https"), (slow_redirects, "http")],
                         ids=["headers", "body", "silent", "tls-handshake", "redirect-chain"])
def test_one_deadline_covers_the_whole_fetch(raw_server, script, scheme):
    server = raw_server(script)
    err, elapsed = timed_fetch(server.url(scheme), max_redirects=20)
    assert elapsed < LIMIT, f"fetch held for {elapsed:.1f} s against timeout_s={TIMEOUT:g}"
    assert "took longer than 2 s" in str(err) and "timed out" in str(err)


def test_deadline_covers_a_connect_that_never_completes(raw_server):
    # a listener that never accepts, its queue full: further SYNs are dropped and connect() hangs
    server = raw_server(silent, backlog=0, accept=False)
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", server.port))
        fillers.append(s)
    try:
        err, elapsed = timed_fetch(server.url())
    finally:
        for s in fillers:
            s.close()
    assert elapsed < LIMIT and "took longer than 2 s" in str(err)


def test_deadline_covers_name_resolution(monkeypatch):
    release, real_getaddrinfo = threading.Event(), socket.getaddrinfo

    def slow_resolver(*args, **kw):
        release.wait(10)
        return real_getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)

    monkeypatch.setattr(fetch_module.socket, "getaddrinfo", slow_resolver)
    try:
        t0 = time.monotonic()
        with pytest.raises(FetchError, match="took longer than 2 s"):
            Fetcher(timeout_s=TIMEOUT).fetch("http://slow-dns.example/")
        assert time.monotonic() - t0 < LIMIT
    finally:
        release.set()


REFUSED = [
    # NAT64 (well-known and local-use prefixes), 6to4, IPv4-compatible, IPv4-mapped forms of loopback and friends
    "http://[64:ff9b::7f00:1]/", "http://[64:ff9b::127.0.0.1]/", "http://[64:ff9b::a9fe:a9fe]/",
    "http://[64:ff9b::a00:1]/", "http://[64:ff9b:1::7f00:1]/", "http://[64:ff9b:1:7f00:1::]/",
    "http://[2002:7f00:1::]/", "http://[2002:a9fe:a9fe::1]/", "http://[2002:c0a8:101::]/",
    "http://[::7f00:1]/", "http://[::127.0.0.1]/", "http://[::a9fe:a9fe]/",
    "http://[::ffff:127.0.0.1]/", "http://[::ffff:a9fe:a9fe]/", "http://[::ffff:0:7f00:1]/",
    # Teredo: server 127.0.0.1, and an obfuscated client 127.0.0.1 behind a public server
    "http://[2001:0:7f00:1::1]/", "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",
    # ISATAP interface id carrying loopback under a public prefix
    "http://[2606:4700:10::5efe:7f00:1]/", "http://[2606:4700:10:0:200:5efe:a00:1]/",
    # other spellings of loopback / this host
    "http://2130706433/", "http://0x7f.1/", "http://0x7f000001/", "http://0177.0.0.1/", "http://127.1/",
    "http://0.0.0.0/", "http://0/", "http://[::]/", "http://[::1]/", "http://[0:0:0:0:0:0:0:1]/",
    "http://localhost./", "http://LOCALHOST/", "http://127.0.0.1./", "http://\uff11\uff12\uff17.0.0.1/",
    "http://evil.example@127.0.0.1/", "http://user:pw@[::1]:8080/", "http://127.0.0.1:80@127.0.0.1/",
    # zone ids, link-local, site-local, multicast, special-purpose IPv4 that Python calls global
    "http://[fe80::1%25lo]/", "http://[fe80::1]/", "http://[fec0::1]/", "http://[ff02::1]/",
    "http://224.0.0.1/", "http://255.255.255.255/", "http://192.0.0.8/", "http://192.88.99.1/",
    "http://100.64.0.1/", "http://198.18.0.1/", "http://[fd00::1]/", "http://[100::1]/",
]


@pytest.mark.parametrize("url", REFUSED)
def test_address_forms_reaching_non_public_hosts_are_refused(url, monkeypatch):
    def no_connect(*a, **kw):
        raise AssertionError("a refused address was connected to")

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", no_connect)
    with pytest.raises(FetchError, match="refused"):
        Fetcher().check(url)
    with pytest.raises(FetchError, match="refused"):
        Fetcher().fetch(url)


@pytest.mark.parametrize("address", ["64:ff9b::808:808", "2002:808:808::1", "::ffff:8.8.8.8", "8.8.8.8",
                                     "2606:4700:4700::1111"])
def test_public_addresses_and_their_translations_pass(address):
    url = f"http://[{address}]/" if ":" in address else f"http://{address}/"
    assert ipaddress.ip_address(Fetcher().check(url)[1]) == ipaddress.ip_address(address)


def test_allow_list_still_opens_loopback_and_nothing_else():
    fetcher = Fetcher(allow=LOOPBACK)
    assert ipaddress.ip_address(fetcher.check("http://[::ffff:127.0.0.1]:8080/")[1]).ipv4_mapped == LOOPBACK_IP
    for url in ("http://[64:ff9b::a00:1]/", "http://[2002:a9fe:a9fe::]/", "http://127.0.0.2/"):
        with pytest.raises(FetchError, match="refused"):
            fetcher.check(url)


def open_sockets() -> set[str]:
    """This process's open sockets, as ``socket:[inode]``."""
    links = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            links.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # closed meanwhile
            pass
    return {link for link in links if link.startswith("socket:")}


def test_normal_fetch_still_works_after_the_attacks_and_nothing_leaks(raw_server):
    local = LoopbackServer()
    try:
        local.route("GET", "/ok", lambda r: (200, {"Content-Type": "text/plain"}, "still here"))
        fetcher = Fetcher(allow=LOOPBACK, timeout_s=1.0)
        assert fetcher.fetch(f"{local.url}/ok").text == "still here"  # warm up lazy imports
        gc.collect()
        threads, sockets = set(threading.enumerate()), open_sockets()
        attackers = [RawServer(script) for script in (slow_headers, slow_body, silent)]
        for _ in range(2):
            for attacker in attackers:
                with pytest.raises(FetchError, match="took longer than 1 s"):
                    fetcher.fetch(attacker.url())
            assert fetcher.fetch(f"{local.url}/ok").text == "still here"
        for attacker in attackers:
            attacker.close()
        gc.collect()
        assert set(threading.enumerate()) - threads == set()
        assert open_sockets() - sockets == set()
        fetcher.close()
    finally:
        local.close()


def gzip_bomb(megabytes: int) -> bytes:
    """``megabytes`` MiB of zeros, gzipped to about a thousandth of that."""
    z, zeros = zlib.compressobj(9, zlib.DEFLATED, 31), bytes(2**20)
    return b"".join(z.compress(zeros) for _ in range(megabytes)) + z.flush()


def test_compressed_bodies_are_inflated_only_up_to_max_bytes():
    bomb = gzip_bomb(64)
    local = LoopbackServer()
    gz = {"Content-Type": "text/plain", "Content-Encoding": "gzip"}
    local.route("GET", "/bomb", lambda r: (200, gz, bomb))
    local.route("GET", "/stacked", lambda r: (200, {**gz, "Content-Encoding": "gzip, gzip"}, gzip_bomb(1)))
    local.route("GET", "/br", lambda r: (200, {**gz, "Content-Encoding": "br"}, b"\x0b\x02\x80hi\x03"))
    local.route("GET", "/page", lambda r: (200, gz, zlib.compress(b"small page", wbits=31)))
    local.route("GET", "/deflate", lambda r: (200, {**gz, "Content-Encoding": "deflate"}, zlib.compress(b"zlib")))
    try:
        fetcher = Fetcher(allow=LOOPBACK, max_bytes=10_000)
        tracemalloc.start()
        page = fetcher.fetch(f"{local.url}/bomb")
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert page.truncated and len(page.text) == 10_000 and peak < 8 * 2**20, f"peak {peak / 2**20:.0f} MiB"
        for path in ("/stacked", "/br"):
            with pytest.raises(FetchError, match="cannot read content encoding"):
                fetcher.fetch(f"{local.url}{path}")
        assert fetcher.fetch(f"{local.url}/page").text == "small page"
        assert fetcher.fetch(f"{local.url}/deflate").text == "zlib"
        assert local.requests[-1]["headers"]["Accept-Encoding"] == "gzip, deflate"
    finally:
        local.close()


def test_every_checked_address_is_tried_in_turn(monkeypatch):
    # the first address refuses the connection (nothing listens on ::1 there); the next one answers
    local = LoopbackServer()
    local.route("GET", "/ok", lambda r: (200, {"Content-Type": "text/plain"}, "second address"))
    real_getaddrinfo = socket.getaddrinfo

    def dual_stack(host, port, *a, **kw):
        if host != "dual.example":
            return real_getaddrinfo(host, port, *a, **kw)
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(fetch_module.socket, "getaddrinfo", dual_stack)
    try:
        page = Fetcher(allow=["dual.example"]).fetch(f"http://dual.example:{local.port}/ok")
        assert page.text == "second address" and local.requests[-1]["headers"]["Host"] == f"dual.example:{local.port}"
        with pytest.raises(FetchError, match=r"refused .*non-public address ::1"):  # each one is checked
            Fetcher(allow=["127.0.0.1"]).fetch(f"http://dual.example:{local.port}/ok")
    finally:
        local.close()
