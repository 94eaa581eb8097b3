"""Search engines for the browser tool, behind one interface.

- :class:`LocalSearch`: BM25 over a folder of ``.md`` / ``.txt`` / ``.html`` files
  (offline, the default).  A file may start with ``key: value`` header lines
  (``title``, ``url``, ``date`` as YYYY-MM-DD) ended by a blank line or ``---``.
- :class:`SearxNGSearch`: a SearxNG instance's JSON API.
- :class:`BingSearch`: a Bing-style web search API (``webPages.value``).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx

SNIPPET_CHARS = 300
DOC_SUFFIXES = (".md", ".markdown", ".txt", ".html", ".htm")
HEADER_KEYS = ("title", "url", "date")
# CJK characters count as one token each; other words need two or more characters.
TOKEN_PATTERN = r"(?u)[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|\b\w\w+\b"


@dataclass
class SearchResult:
    title: str
    url: str
    snippet: str
    text: str | None = None  # full text when the engine has it (local documents)
    date: str | None = None


class SearchBackend(Protocol):
    def search(self, query: str, recency_days: int | None = None, limit: int = 10) -> list[SearchResult]: ...


class LocalSearch:
    """BM25 (``bm25s``) over the documents of a folder, indexed once at construction."""

    def __init__(self, folder: str | Path):
        import bm25s

        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"document folder {self.folder} does not exist")
        self.docs: list[SearchResult] = []
        files = sorted(p for p in self.folder.rglob("*") if p.suffix.lower() in DOC_SUFFIXES and p.is_file())
        for path in files:
            self.docs.append(_read_doc(path))
        if not self.docs:
            raise ValueError(f"no {'/'.join(DOC_SUFFIXES)} documents in {self.folder}")
        corpus = [f"{d.title}\n{d.text}" for d in self.docs]
        self._bm25 = bm25s.BM25()
        self._bm25.index(bm25s.tokenize(corpus, token_pattern=TOKEN_PATTERN, stopwords="en", show_progress=False),
                         show_progress=False)
        self._by_url = {d.url: d for d in self.docs}

    def search(self, query: str, recency_days: int | None = None, limit: int = 10) -> list[SearchResult]:
        import bm25s

        tokens = bm25s.tokenize([query], token_pattern=TOKEN_PATTERN, stopwords="en", return_ids=False,
                                show_progress=False)
        if not tokens[0]:
            return []
        ids, scores = self._bm25.retrieve(tokens, k=len(self.docs), show_progress=False)
        cutoff = dt.date.today() - dt.timedelta(days=recency_days) if recency_days else None
        out = []
        for i, score in zip(ids[0], scores[0]):
            doc = self.docs[int(i)]
            if score <= 0 or (cutoff and doc.date and dt.date.fromisoformat(doc.date) < cutoff):
                continue
            out.append(SearchResult(doc.title, doc.url, best_passage(doc.text, query), doc.text, doc.date))
            if len(out) == limit:
                break
        return out

    def lookup(self, url: str) -> SearchResult | None:
        """The indexed document with this URL, so ``open_url`` works offline."""
        return self._by_url.get(url)


def _read_doc(path: Path) -> SearchResult:
    raw = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() in (".html", ".htm"):
        from .fetch import html_to_text

        title, text = html_to_text(raw)
        return SearchResult(title or path.stem, path.resolve().as_uri(), "", text)
    meta, lines = {}, raw.splitlines()
    start = 1 if lines and lines[0].strip() == "---" else 0  # YAML-style front matter
    body = start
    for k in range(start, len(lines)):
        m = re.fullmatch(r"(\w+):\s*(.*)", lines[k].strip())
        if m and m.group(1).lower() in HEADER_KEYS:
            meta[m.group(1).lower()] = m.group(2).strip()
            body = k + 1
            continue
        if meta and lines[k].strip() in ("", "---"):
            body = k + 1
        break
    lines = lines[body:] if meta else lines
    if "date" in meta:
        try:
            dt.date.fromisoformat(meta["date"])
        except ValueError:
            raise ValueError(f"{path}: date {meta['date']!r} is not YYYY-MM-DD") from None
    text = "\n".join(lines).strip()
    heading = next((ln.lstrip("#").strip() for ln in lines if ln.startswith("#")), None)
    title = meta.get("title") or heading or path.stem
    return SearchResult(title, meta.get("url") or path.resolve().as_uri(), "", text, meta.get("date"))


def best_passage(text: str, query: str, chars: int = SNIPPET_CHARS) -> str:
    """The paragraph sharing the most words with the query, cut to ``chars``."""
    words = {w.lower() for w in re.findall(TOKEN_PATTERN, query)}
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip() and not p.strip().startswith("#")]
    if not paragraphs:
        return text[:chars]
    best = max(paragraphs, key=lambda p: len(words & {w.lower() for w in re.findall(TOKEN_PATTERN, p)}))
    best = " ".join(best.split())
    return best if len(best) <= chars else best[: chars - 3] + "..."


class SearxNGSearch:
    """A SearxNG instance (``base_url`` such as ``http://127.0.0.1:8888``; its JSON format must be enabled)."""

    RANGES = ((1, "day"), (7, "week"), (31, "month"), (366, "year"))

    def __init__(self, base_url: str, *, timeout_s: float = 15.0, client: httpx.Client | None = None):
        self.base_url = base_url.rstrip("/")
        self._http = client or httpx.Client(timeout=timeout_s, trust_env=False)

    def search(self, query: str, recency_days: int | None = None, limit: int = 10) -> list[SearchResult]:
        params = {"q": query, "format": "json"}
        if recency_days:
            params["time_range"] = next((name for days, name in self.RANGES if recency_days <= days), "year")
        data = _get_json(self._http, f"{self.base_url}/search", params=params)
        return [SearchResult(r.get("title") or r.get("url", ""), r.get("url", ""), r.get("content") or "",
                             date=r.get("publishedDate")) for r in (data.get("results") or [])[:limit]]


class BingSearch:
    """A Bing-style web search API: ``GET endpoint?q=...`` with the key in ``Ocp-Apim-Subscription-Key``."""

    FRESHNESS = ((1, "Day"), (7, "Week"), (31, "Month"))

    def __init__(self, api_key: str, endpoint: str = "https://api.bing.microsoft.com/v7.0/search", *,
                 timeout_s: float = 15.0, client: httpx.Client | None = None):
        self.endpoint = endpoint
        self._http = client or httpx.Client(timeout=timeout_s, trust_env=False)
        self._headers = {"Ocp-Apim-Subscription-Key": api_key}

    def __repr__(self) -> str:  # never show the key
        return f"BingSearch(endpoint={self.endpoint!r})"

    def search(self, query: str, recency_days: int | None = None, limit: int = 10) -> list[SearchResult]:
        params = {"q": query, "count": limit, "textFormat": "Raw"}
        if recency_days:
            params["freshness"] = next((n for days, n in self.FRESHNESS if recency_days <= days), None) or (
                f"{dt.date.today() - dt.timedelta(days=recency_days)}..{dt.date.today()}")
        data = _get_json(self._http, self.endpoint, params=params, headers=self._headers)
        values = (data.get("webPages") or {}).get("value") or []
        return [SearchResult(v.get("name", ""), v.get("url", ""), v.get("snippet", ""),
                             date=(v.get("dateLastCrawled") or "")[:10] or None) for v in values[:limit]]


def _get_json(http: httpx.Client, url: str, **kw) -> dict:
    try:
        r = http.get(url, **kw)
    except httpx.HTTPError as e:
        raise ConnectionError(f"search engine at {url}: {type(e).__name__}: {e}") from None
    if r.status_code >= 400:
        raise ConnectionError(f"search engine at {url} answered HTTP {r.status_code}: {r.text[:200]}")
    try:
        return r.json()
    except ValueError:
        raise ConnectionError(f"search engine at {url} did not answer JSON") from None
