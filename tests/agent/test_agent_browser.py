"""simple_browser: address policy on every hop, size/time limits, clean text, search backends."""

import datetime
import time

import pytest

from openglm.agent.tools import BingSearch, BrowserTool, Fetcher, FetchError, LocalSearch, SearxNGSearch, ToolError
from openglm.agent.tools.search import best_passage
from tests.agent.conftest import DOCS

PAGE = """<html><head><title>Population page</title><style>body{color:red}</style>
<script>var secret = "tracking";</script></head>
<body><nav>Home | About</nav><h1>Population of China</h1><p>In 2020 the census counted
1,411,778,724 people.</p><footer>Copyright</footer></body></html>"""


@pytest.mark.parametrize("url", ["http://127.0.0.1/", "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/",
                                 "http://localhost/", "http://[::1]/", "http://0.0.0.0/", "http://192.168.1.1/",
                                 "file:///etc/passwd", "ftp://example.org/"])
def test_private_loopback_link_local_and_other_schemes_are_refused(url):
    with pytest.raises(FetchError, match="refused"):
        Fetcher().fetch(url)


def test_loopback_server_refused_by_default_and_fetched_when_allow_listed(http_server):
    http_server.route("GET", "/page", lambda r: (200, {"Content-Type": "text/html; charset=utf-8"}, PAGE))
    with pytest.raises(FetchError, match="non-public address 127.0.0.1"):
        Fetcher().fetch(f"{http_server.url}/page")
    assert not http_server.requests  # refused before connecting

    page = Fetcher(allow=["127.0.0.1"]).fetch(f"{http_server.url}/page")
    assert page.title == "Population page"
    assert page.text == "Population of China\nIn 2020 the census counted\n1,411,778,724 people."
    assert http_server.requests[-1]["headers"]["Host"] == f"127.0.0.1:{http_server.port}"


@pytest.mark.parametrize("target", ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/admin",
                                    "http://127.0.0.2/"])
def test_every_redirect_hop_is_checked(http_server, target):
    http_server.route("GET", "/go", lambda r: (302, {"Location": target}, ""))
    with pytest.raises(FetchError, match="refused"):
        Fetcher(allow=["127.0.0.1"]).fetch(f"{http_server.url}/go")
    assert len(http_server.requests) == 1  # the redirect target was never contacted


def test_redirects_within_the_allow_list_are_followed(http_server):
    http_server.route("GET", "/old", lambda r: (301, {"Location": "/new"}, ""))
    http_server.route("GET", "/new", lambda r: (200, {"Content-Type": "text/plain"}, "moved here"))
    page = Fetcher(allow=["127.0.0.0/8"]).fetch(f"{http_server.url}/old")
    assert page.text == "moved here" and page.url.endswith("/new")
    loop = Fetcher(allow=["127.0.0.1"], max_redirects=3)
    http_server.route("GET", "/loop", lambda r: (302, {"Location": "/loop"}, ""))
    with pytest.raises(FetchError, match="more than 3 redirects"):
        loop.fetch(f"{http_server.url}/loop")


def test_size_and_time_limits(http_server):
    http_server.route("GET", "/big", lambda r: (200, {"Content-Type": "text/plain"}, "a" * 300_000))
    page = Fetcher(allow=["127.0.0.1"], max_bytes=10_000).fetch(f"{http_server.url}/big")
    assert page.truncated and len(page.text) == 10_000

    def slow(r):
        time.sleep(3)
        return 200, {}, "late"

    http_server.route("GET", "/slow", slow)
    t0 = time.monotonic()
    with pytest.raises(FetchError, match="timed out"):
        Fetcher(allow=["127.0.0.1"], timeout_s=0.5).fetch(f"{http_server.url}/slow")
    assert time.monotonic() - t0 < 2.5
    http_server.route("GET", "/pdf", lambda r: (200, {"Content-Type": "application/pdf"}, b"%PDF"))
    with pytest.raises(FetchError, match="application/pdf"):
        Fetcher(allow=["127.0.0.1"]).fetch(f"{http_server.url}/pdf")


def test_browser_search_mclick_open_url_and_citations(http_server):
    http_server.route("GET", "/page", lambda r: (200, {"Content-Type": "text/html"}, PAGE))
    browser = BrowserTool(LocalSearch(DOCS), Fetcher(allow=["127.0.0.1"]))
    found = browser.run({"function": "search", "args": ["Japan population census"], "kwargs": {}})
    assert found.metadata == "browser_result"
    assert found.content.splitlines()[0] == "# 【0†Population of Japan†stats.example.org】"
    quotes = browser.run({"function": "mclick", "args": [[0, 7]], "kwargs": {}})
    assert "【0†Population of Japan】\n# Population of Japan" in quotes.content
    assert "【7†?】\nError: no page with id 7" in quotes.content and not quotes.is_error
    opened = browser.run({"function": "open_url", "args": [f"{http_server.url}/page"], "kwargs": {}})
    n = len(browser.pages) - 1
    assert opened.content.startswith(f"【{n}†Population page】\nPopulation of China")
    # a local document opens by its URL without any network
    local = browser.run({"function": "open_url", "args": ["https://stats.example.org/census/china-2020"], "kwargs": {}})
    assert "1,411,778,724" in local.content
    with pytest.raises(ToolError, match="non-public"):
        BrowserTool(LocalSearch(DOCS)).run({"function": "open_url", "args": [f"{http_server.url}/page"], "kwargs": {}})


def test_local_search_recency_headers_and_snippets(tmp_path):
    assert [r.title for r in LocalSearch(DOCS).search("dumplings wrapper")][:1] == ["How to fold dumplings"]
    today = datetime.date.today()
    (tmp_path / "new.md").write_text(f"---\ntitle: New census\ndate: {today}\n---\nCensus results today.")
    (tmp_path / "old.md").write_text("date: 2001-01-01\n\n# Old census\nCensus results long ago.")
    (tmp_path / "undated.txt").write_text("Census notes without a date.")
    engine = LocalSearch(tmp_path)
    assert sorted(r.title for r in engine.search("census")) == ["New census", "Old census", "undated"]
    assert sorted(r.title for r in engine.search("census", recency_days=7)) == ["New census", "undated"]
    assert engine.search("census results")[0].text == "Census results today."
    assert best_passage("# T\n\nabout cats\n\nChina population 2020 was large", "China population") == \
        "China population 2020 was large"


def test_searxng_and_bing_backends(http_server):
    def searx(r):
        assert r["query"]["format"] == ["json"] and r["query"]["time_range"] == ["week"]
        return 200, {}, {"results": [{"title": "T1", "url": "https://a.example/1", "content": "snippet one"}]}

    def bing(r):
        assert r["headers"]["Ocp-Apim-Subscription-Key"] == "bing-key" and r["query"]["freshness"] == ["Day"]
        return 200, {}, {"webPages": {"value": [{"name": "B1", "url": "https://b.example/", "snippet": "s",
                                                  "dateLastCrawled": "2024-05-01T00:00:00Z"}]}}

    http_server.route("GET", "/search", searx)
    http_server.route("GET", "/bing", bing)
    results = SearxNGSearch(http_server.url).search("q", recency_days=5)
    assert [(r.title, r.url, r.snippet) for r in results] == [("T1", "https://a.example/1", "snippet one")]
    b = BingSearch("bing-key", f"{http_server.url}/bing")
    assert [(r.title, r.date) for r in b.search("q", recency_days=1)] == [("B1", "2024-05-01")]
    assert "bing-key" not in repr(b)
    http_server.route("GET", "/search", lambda r: (500, {}, "boom"))
    browser = BrowserTool(SearxNGSearch(http_server.url))
    with pytest.raises(ToolError, match="HTTP 500"):
        browser.run({"function": "search", "args": ["q"], "kwargs": {}})
