"""Fetch web pages for the browser tool, safely: public addresses only, bounded size and time, clean text.

Every hop of a redirect chain is checked: the host name is resolved and *each*
address it resolves to must be public (not private, loopback, link-local,
shared, reserved or multicast, nor an IPv6 form that carries such an IPv4
address: mapped, compatible, NAT64, 6to4, Teredo, ISATAP) unless allow-listed.
The connection then goes to the checked address itself, so a DNS answer that
changes between check and connect (rebinding) cannot redirect it.

One deadline, ``timeout_s``, covers the whole fetch: name lookups, connects,
TLS handshakes, request, headers and body of every hop.  httpx's own timeouts
are per socket operation, so a server trickling a header line a second never
trips them; here every socket operation gets only the time left.
"""

from __future__ import annotations

import contextvars
import ipaddress
import socket
import threading
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpcore
import httpx

USER_AGENT = "openglm-agent/0.1 (+https://github.com/openglm)"
TEXT_TYPES = ("text/html", "application/xhtml+xml", "text/plain", "text/markdown", "application/json", "text/xml")
ZLIB_CODINGS, OTHER_CODINGS = ("gzip", "x-gzip", "deflate"), ("br", "zstd", "compress", "x-compress")
DROP_TAGS = ("script", "style", "noscript", "svg", "iframe", "template", "nav", "footer", "aside", "form", "button")


def _nets(*names: str) -> tuple:
    return tuple(ipaddress.ip_network(n) for n in names)


# Special-purpose ranges refused whatever this Python's ``is_global`` says: its tables vary by
# version and miss some (3.11 calls 192.0.0.8, fec0::/10, ::7f00:1 and 64:ff9b::7f00:1 global).
V4_REFUSED = _nets("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
                   "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
                   "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4")
V6_REFUSED = _nets(
    "::/8",  # reserved: unspecified, loopback, IPv4-compatible ::a.b.c.d, SIIT ::ffff:0:a.b.c.d (mapped is judged)
    "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215): where it embeds IPv4 is site-specific
    "100::/64", "2001::/23", "2001:db8::/32", "3fff::/20", "5f00::/16",  # discard, IETF (Teredo), docs, SRv6
    "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8")  # unique-local, link-local, site-local, multicast
NAT64, SIX_TO_FOUR, V4_COMPATIBLE = _nets("64:ff9b::/96", "2002::/16", "::/96")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses that traffic to ``ip`` is translated or tunnelled to (none for plain IPv6)."""
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.ipv4_mapped:
        return [ip.ipv4_mapped]
    if ip in NAT64 or (ip in V4_COMPATIBLE and int(ip) > 1):  # :: and ::1 are not compatible forms
        return [low32]
    if ip.sixtofour:
        return [ip.sixtofour]
    if ip.teredo:
        return list(ip.teredo)  # the server, and the client (un-obfuscated)
    if (int(ip) >> 32) & 0xFFFFFFFF in (0x00005EFE, 0x02005EFE):  # ISATAP interface id
        return [low32]
    return []


def is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether ``ip`` is an ordinary public unicast address (embedded IPv4 is judged by the caller)."""
    refused = V4_REFUSED if ip.version == 4 else V6_REFUSED
    return not any(ip in net for net in refused) and ip.is_global and not ip.is_multicast


# The deadline of the fetch running in this thread; the socket streams below read it.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("openglm_fetch_deadline", default=None)


def _clip(timeout: float | None, error: type[Exception]) -> float | None:
    """``timeout`` cut to the time left before the deadline; ``error`` once it has passed."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("the fetch deadline has passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every operation (TLS handshake included) ends by the fetch deadline."""

    def __init__(self, inner: httpcore.NetworkStream):
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _clip(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _clip(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context, server_hostname: str | None = None, timeout: float | None = None):
        # CPython bounds a whole handshake by one socket timeout, so a trickled handshake ends in time too
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname,
                                                     _clip(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str):
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's socket backend with the fetch deadline applied to connects and every stream operation."""

    def __init__(self):
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        return _DeadlineStream(self._inner.connect_tcp(host, port, _clip(timeout, httpcore.ConnectTimeout),
                                                       local_address, socket_options))

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise httpcore.UnsupportedProtocol("unix sockets are not fetched")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def _transport() -> httpx.HTTPTransport:
    transport = httpx.HTTPTransport(trust_env=False)
    if not isinstance(getattr(transport, "_pool", None), httpcore.ConnectionPool):  # pragma: no cover
        raise RuntimeError("httpx changed its transport internals; the fetch deadline cannot be installed")
    # httpx has no public hook for the network backend, so swap in a pool built on ours.  No
    # keep-alive: a pooled connection (keyed by address) would carry one host's TLS check over to
    # another host on the same address, and would outlive the fetch.
    transport._pool = httpcore.ConnectionPool(ssl_context=httpx.create_ssl_context(trust_env=False),
                                              network_backend=_DeadlineBackend(), max_keepalive_connections=0)
    return transport


class FetchError(Exception):
    """A page could not (or may not) be fetched; the message says why."""


class _Inflater:
    """Undo a gzip or deflate Content-Encoding, never producing more than asked for."""

    def __init__(self, header: str):
        # like httpx, codings it does not know are ignored (servers mislabel); one zlib layer at most,
        # since stacked or other compressions could not be decoded within a bound
        codings = [c for c in (c.strip().lower() for c in header.split(",")) if c in ZLIB_CODINGS + OTHER_CODINGS]
        if len(codings) > 1 or any(c in OTHER_CODINGS for c in codings):
            raise FetchError(f"cannot read content encoding {header!r}")
        self.encoding = codings[0] if codings else ""
        self._fresh = True
        self._zlib = zlib.decompressobj(zlib.MAX_WBITS | (16 if "gzip" in self.encoding else 0)) if codings else None

    def __call__(self, data: bytes, limit: int) -> bytes:
        if self._zlib is None:
            return data
        try:
            out = self._zlib.decompress(data, max(1, limit))
        except zlib.error as e:
            if not (self._fresh and self.encoding == "deflate"):
                raise FetchError(f"cannot decode {self.encoding} content: {e}") from None
            self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)  # some servers send raw deflate
            self._fresh = False
            return self(data, limit)
        self._fresh = False
        return out


@dataclass
class Page:
    url: str
    title: str
    text: str
    truncated: bool = False


class Fetcher:
    """GET pages under the limits and the address policy.

    ``allow``: host names (``"intranet.example"``), addresses or networks
    (``"127.0.0.1"``, ``"10.0.0.0/8"``) that may be reached although not public.
    ``timeout_s`` bounds a whole :meth:`fetch`, all redirect hops together.
    """

    def __init__(self, allow: Iterable[str] = (), *, timeout_s: float = 15.0, max_bytes: int = 2_000_000,
                 max_redirects: int = 5, user_agent: str = USER_AGENT):
        self.allow_hosts: set[str] = set()
        self.allow_nets: list = []
        for entry in allow:
            try:
                self.allow_nets.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.allow_hosts.add(entry.lower().rstrip("."))
        self.timeout_s, self.max_bytes, self.max_redirects = timeout_s, max_bytes, max_redirects
        # trust_env=False: an environment proxy would resolve names itself, past our checks
        self._http = httpx.Client(transport=_transport(), timeout=timeout_s, follow_redirects=False,
                                  trust_env=False,
                                  headers={"User-Agent": user_agent, "Accept-Encoding": "gzip, deflate"})

    def check(self, url: str, deadline: float | None = None) -> tuple[str, str]:
        """``(host, address to connect to)`` for ``url``, or :class:`FetchError` if it is not allowed."""
        host, addresses = self._check(url, deadline)
        return host, addresses[0]

    def _check(self, url: str, deadline: float | None = None) -> tuple[str, list[str]]:
        """``(host, every address it resolves to, all checked)``."""
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as e:
            raise FetchError(f"refused {url!r}: {e}") from None
        if parts.scheme not in ("http", "https"):
            raise FetchError(f"refused {url!r}: only http and https URLs can be opened")
        host = (parts.hostname or "").lower().rstrip(".")
        if not host:
            raise FetchError(f"refused {url!r}: no host")
        if "%" in host:  # a zone id picks a local interface; nothing public needs one
            raise FetchError(f"refused {url!r}: IPv6 zone ids are not accepted")
        if deadline is None:
            deadline = time.monotonic() + self.timeout_s
        addresses = self._resolve(url, host, port, deadline)
        if host not in self.allow_hosts:
            for addr in addresses:
                reason = self._reason(ipaddress.ip_address(addr.split("%")[0]))
                if reason:
                    raise FetchError(f"refused {url!r}: {host} resolves to the non-public address {reason} "
                                     "(allow it explicitly to reach it)")
        return host, addresses

    def _resolve(self, url: str, host: str, port: int, deadline: float) -> list[str]:
        """The addresses of ``host``, looked up within the deadline (getaddrinfo itself has none)."""
        try:
            return [str(ipaddress.ip_address(host))]  # a literal: nothing to look up
        except ValueError:
            pass
        box: dict = {}

        def lookup() -> None:
            try:
                box["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except (OSError, ValueError, UnicodeError) as e:
                box["error"] = e

        # a daemon thread, so a hung resolver is abandoned at the deadline; it ends with the lookup
        worker = threading.Thread(target=lookup, name="openglm-fetch-dns", daemon=True)
        worker.start()
        worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            raise self._too_slow(url)
        if "error" in box or not box.get("infos"):
            raise FetchError(f"cannot resolve {host!r}: {box.get('error', 'no addresses')}")
        return list(dict.fromkeys(info[4][0] for info in box["infos"]))

    def _reason(self, ip) -> str | None:
        """Why ``ip`` may not be reached, or None if it may."""
        if any(ip in net for net in self.allow_nets):
            return None
        if ip.version == 6:
            carried = embedded_ipv4(ip)
            for v4 in carried:
                if self._reason(v4):
                    return f"{ip} (which carries {v4})"
            if carried and (ip.ipv4_mapped or ip in NAT64 or ip in SIX_TO_FOUR):
                return None  # a plain translation: the IPv4 address it carries decides
        return None if is_public(ip) else str(ip)

    def _too_slow(self, url: str) -> FetchError:
        return FetchError(f"{url}: timed out: the page took longer than {self.timeout_s:g} s")

    def fetch(self, url: str) -> Page:
        """The page at ``url`` as clean text (following checked redirects), all within ``timeout_s``."""
        deadline = time.monotonic() + self.timeout_s
        token = _DEADLINE.set(deadline)
        try:
            return self._fetch(url, deadline)
        finally:
            _DEADLINE.reset(token)

    def _fetch(self, url: str, deadline: float) -> Page:
        for _ in range(self.max_redirects + 1):
            host, addresses = self._check(url, deadline)
            response, body, truncated = self._get(url, host, addresses, deadline)
            if response.is_redirect:
                location = response.headers.get("location")
                if not location:
                    raise FetchError(f"{url}: redirect without a Location header")
                url = urljoin(url, location)
                continue
            if response.status_code >= 400:
                raise FetchError(f"{url}: HTTP {response.status_code}")
            ctype = response.headers.get("content-type", "text/html").split(";")[0].strip().lower()
            if ctype not in TEXT_TYPES:
                raise FetchError(f"{url}: cannot read content type {ctype!r}")
            text = body.decode(response.encoding or "utf-8", errors="replace")
            if ctype in ("text/html", "application/xhtml+xml"):
                title, text = html_to_text(text)
            else:
                title = ""
            return Page(url, title or host, text, truncated)
        raise FetchError(f"{url}: more than {self.max_redirects} redirects")

    def _get(self, url: str, host: str, addresses: list[str], deadline: float):
        """GET ``url`` from the first of the checked ``addresses`` that takes the connection."""
        try:
            for addr in addresses[:-1]:
                try:
                    return self._get_from(url, host, addr, deadline)
                except httpx.ConnectError:  # refused or unreachable (IPv6 without a route): try the next
                    continue
            return self._get_from(url, host, addresses[-1], deadline)
        except httpx.TimeoutException:
            raise self._too_slow(url) from None
        except httpx.HTTPError as e:
            raise FetchError(f"{url}: {type(e).__name__}: {e}") from None

    def _get_from(self, url: str, host: str, addr: str, deadline: float):
        # always the checked address, never a name httpx would resolve (or parse differently) itself
        parts = urlsplit(url)
        netloc = f"[{addr}]" if ":" in addr else addr
        if parts.port:
            netloc += f":{parts.port}"
        target = urlunsplit(parts._replace(netloc=netloc))
        try:  # the name as checked (no userinfo), IDNA-encoded since headers are ASCII
            name = host if host.isascii() else host.encode("idna").decode("ascii")
        except UnicodeError as e:
            raise FetchError(f"refused {url!r}: {e}") from None
        name = f"[{name}]" if ":" in name else name
        headers = {"Host": f"{name}:{parts.port}" if parts.port else name}
        with self._http.stream("GET", target, headers=headers, extensions={"sni_hostname": host}) as r:
            if r.is_redirect:  # only its Location matters
                return r, b"", False
            inflate = _Inflater(r.headers.get("content-encoding", ""))
            chunks, size, truncated = [], 0, False
            for raw in r.iter_raw():
                # decoded here, never past max_bytes: httpx would inflate a whole chunk at once (a bomb)
                chunk = inflate(raw, self.max_bytes - size)
                chunks.append(chunk)
                size += len(chunk)
                if size >= self.max_bytes:
                    truncated = True
                    break
                if time.monotonic() > deadline:
                    raise self._too_slow(url)
            return r, b"".join(chunks)[: self.max_bytes], truncated

    def close(self) -> None:
        self._http.close()


def html_to_text(html: str) -> tuple[str, str]:
    """``(title, readable text)`` of an HTML page: scripts, styles and page chrome dropped."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for tag in soup(DROP_TAGS):
        tag.decompose()
    if soup.head:
        soup.head.decompose()
    lines = (" ".join(line.split()) for line in soup.get_text("\n").splitlines())
    return title, "\n".join(line for line in lines if line)
