"""The ``simple_browser`` tool: ``search``, ``mclick`` and ``open_url``, with GLM-4 citations.

Every page the model has seen gets an id for the whole session; the model
cites it as ``【{id}†{title}】``.  Observations follow the GLM-4 demo:

- ``search`` -> metadata ``browser_result``, one ``# 【id†title†host】`` line plus
  a snippet per result;
- ``mclick`` / ``open_url`` -> metadata ``quote_result``, each page as
  ``【id†title】`` followed by its text (cut to ``quote_chars``).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from openglm.chat.protocol import BROWSER_FUNCTIONS

from .base import Observation, Tool, ToolError, clip
from .fetch import Fetcher, FetchError
from .search import SearchBackend

MAX_CLICKS = 10


@dataclass
class _Seen:
    title: str
    url: str
    text: str | None


class BrowserTool(Tool):
    """Search with ``search`` (a :class:`~.search.SearchBackend`), read pages with ``fetcher``."""

    name = "simple_browser"
    timeout_s = 180.0

    def __init__(self, search: SearchBackend, fetcher: Fetcher | None = None, *, results: int = 10,
                 quote_chars: int = 4000, total_chars: int = 16000):
        self.engine = search
        self.fetcher = fetcher or Fetcher()
        self.results, self.quote_chars, self.total_chars = results, quote_chars, total_chars
        self.pages: dict[int, _Seen] = {}

    def spec(self) -> dict:
        return {"type": "simple_browser"}

    def run(self, arguments) -> Observation:
        if not isinstance(arguments, dict) or arguments.get("function") not in BROWSER_FUNCTIONS:
            raise ToolError("simple_browser expects search(...), mclick([...]) or open_url(...)")
        fn = arguments["function"]
        bound = dict(zip(BROWSER_FUNCTIONS[fn], arguments.get("args", [])), **arguments.get("kwargs", {}))
        if fn == "search":
            return self.search(bound["query"], bound.get("recency_days"))
        if fn == "mclick":
            return self.mclick(bound["ids"])
        return self.open_url(bound["url"])

    def search(self, query: str, recency_days: int | None = None) -> Observation:
        try:
            results = self.engine.search(query, recency_days=recency_days, limit=self.results)
        except ConnectionError as e:
            raise ToolError(str(e)) from None
        if not results:
            return Observation(f"no results for {query!r}; try other words", "browser_result")
        blocks = []
        for r in results:
            i = self._remember(r.title, r.url, r.text)
            host = urlsplit(r.url).hostname or "local"
            blocks.append(f"# 【{i}†{r.title}†{host}】\n{r.snippet}".rstrip())
        return Observation("\n\n".join(blocks), "browser_result")

    def mclick(self, ids: list[int]) -> Observation:
        if not ids:
            raise ToolError("mclick needs at least one id from the search results")
        if len(ids) > MAX_CLICKS:
            raise ToolError(f"mclick takes at most {MAX_CLICKS} ids, got {len(ids)}")
        per_page = max(500, min(self.quote_chars, self.total_chars // len(ids)))
        blocks, failures = [], 0
        for i in dict.fromkeys(ids):
            seen = self.pages.get(i)
            if seen is None:
                blocks.append(f"【{i}†?】\nError: no page with id {i}; use ids from the search results")
                failures += 1
                continue
            try:
                text = seen.text if seen.text is not None else self._fetch(seen)
            except FetchError as e:
                blocks.append(f"【{i}†{seen.title}】\nError: {e}")
                failures += 1
                continue
            blocks.append(f"【{i}†{seen.title}】\n{clip(text, per_page)}")
        obs = Observation("\n\n".join(blocks), "quote_result")
        obs.is_error = failures == len(blocks)
        return obs

    def open_url(self, url: str) -> Observation:
        lookup = getattr(self.engine, "lookup", None)  # local documents open offline
        local = lookup(url) if lookup else None
        if local is not None:
            title, text = local.title, local.text or ""
        else:
            try:
                page = self.fetcher.fetch(url)
            except FetchError as e:
                raise ToolError(str(e)) from None
            title, text = page.title, page.text
        i = self._remember(title, url, text)
        return Observation(f"【{i}†{title}】\n{clip(text, self.quote_chars)}", "quote_result")

    def _fetch(self, seen: _Seen) -> str:
        page = self.fetcher.fetch(seen.url)
        seen.text = page.text
        return page.text

    def _remember(self, title: str, url: str, text: str | None) -> int:
        for i, seen in self.pages.items():
            if seen.url == url:
                return i
        i = len(self.pages)
        self.pages[i] = _Seen(title, url, text)
        return i

    def close(self) -> None:
        self.fetcher.close()
