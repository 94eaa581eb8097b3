"""Fetch web pages for the browser tool, safely: public addresses only, bounded size and time, clean text.

Every hop of a redirect chain is checked: the host name is resolved and *each*
address it resolves to must be public (not private, loopback, link-local,
shared, reserved or multicast) unless allow-listed.  The connection then goes
to the checked address itself, so a DNS answer that changes between check and
connect (rebinding) cannot redirect it.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

USER_AGENT = "openglm-agent/0.1 (+https://github.com/openglm)"
TEXT_TYPES = ("text/html", "application/xhtml+xml", "text/plain", "text/markdown", "application/json", "text/xml")
DROP_TAGS = ("script", "style", "noscript", "svg", "iframe", "template", "nav", "footer", "aside", "form", "button")


class FetchError(Exception):
    """A page could not (or may not) be fetched; the message says why."""


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
        self._http = httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False,
                                  headers={"User-Agent": user_agent})

    def check(self, url: str) -> tuple[str, str | None]:
        """``(host, address to connect to)`` for ``url``, or :class:`FetchError` if it is not allowed."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise FetchError(f"refused {url!r}: only http and https URLs can be opened")
        host = (parts.hostname or "").lower().rstrip(".")
        if not host:
            raise FetchError(f"refused {url!r}: no host")
        if host in self.allow_hosts:
            return host, None
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, ValueError, UnicodeError) as e:
            raise FetchError(f"cannot resolve {host!r}: {e}") from None
        addresses = list(dict.fromkeys(info[4][0] for info in infos))
        for addr in addresses:
            ip = ipaddress.ip_address(addr.split("%")[0])
            if getattr(ip, "ipv4_mapped", None):
                ip = ip.ipv4_mapped
            if not self._allowed(ip):
                raise FetchError(f"refused {url!r}: {host} resolves to the non-public address {ip} "
                                 "(allow it explicitly to reach it)")
        return host, addresses[0]

    def _allowed(self, ip) -> bool:
        if any(ip in net for net in self.allow_nets):
            return True
        return ip.is_global and not ip.is_multicast

    def fetch(self, url: str) -> Page:
        """The page at ``url`` as clean text (following checked redirects)."""
        deadline = time.monotonic() + self.timeout_s
        for _ in range(self.max_redirects + 1):
            host, addr = self.check(url)
            response, body, truncated = self._get(url, host, addr, deadline)
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

    def _get(self, url: str, host: str, addr: str | None, deadline: float):
        target, headers, extensions = url, {}, {}
        if addr is not None:
            parts = urlsplit(url)
            netloc = f"[{addr}]" if ":" in addr else addr
            if parts.port:
                netloc += f":{parts.port}"
            target = urlunsplit(parts._replace(netloc=netloc))
            headers["Host"] = parts.netloc.rsplit("@", 1)[-1]
            extensions["sni_hostname"] = host
        try:
            with self._http.stream("GET", target, headers=headers, extensions=extensions) as r:
                chunks, size, truncated = [], 0, False
                for chunk in r.iter_bytes():
                    chunks.append(chunk)
                    size += len(chunk)
                    if size >= self.max_bytes:
                        truncated = True
                        break
                    if time.monotonic() > deadline:
                        raise FetchError(f"{url}: took longer than {self.timeout_s:g} s")
                return r, b"".join(chunks)[: self.max_bytes], truncated
        except httpx.TimeoutException:
            raise FetchError(f"{url}: timed out after {self.timeout_s:g} s") from None
        except httpx.HTTPError as e:
            raise FetchError(f"{url}: {type(e).__name__}: {e}") from None

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
