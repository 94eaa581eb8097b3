"""The paper's Figure 2 workflow end to end: search -> mclick -> python -> answer, then resume the session.

The model is a replay of GLM-4 turns (fixtures/figure2.json), pushed through the
real tokenizer and parser; the tools are real (BM25 over fixture documents, a
sandboxed Jupyter kernel).
"""

import json

from openglm.agent import Agent, FinalEvent, ObservationEvent, ReplayBackend, SessionStore, TextDelta, ToolCallEvent
from openglm.agent.tools import BrowserTool, LocalSearch, PythonTool
from openglm.chat import Message, render
from openglm.tokenizer import default_tokenizer
from tests.agent.conftest import DOCS, FIXTURES

TASK = "What was the compound annual growth rate of China's population between the 2000 and 2020 censuses?"


def test_figure2_search_mclick_python_answer_and_resume(tmp_path):
    tok = default_tokenizer()
    script = json.loads((FIXTURES / "figure2.json").read_text())
    backend = ReplayBackend(script, tok)
    store = SessionStore(tmp_path / "sessions.db")
    python = PythonTool(tmp_path / "s" / "data")
    agent = Agent(backend, [BrowserTool(LocalSearch(DOCS)), python], store=store)
    try:
        events = list(agent.run(TASK))
    finally:
        agent.close()

    calls = [e for e in events if isinstance(e, ToolCallEvent)]
    obs = [e for e in events if isinstance(e, ObservationEvent)]
    assert [c.name for c in calls] == ["simple_browser", "simple_browser", "python"]
    assert calls[0].arguments == {"function": "search", "args": ["China population census 2000 2020"], "kwargs": {}}
    assert not any(o.is_error for o in obs), [o.content for o in obs]

    # search: the two census pages rank first, listed in GLM-4's result format
    search = obs[0]
    assert search.metadata == "browser_result"
    assert search.content.startswith("# 【0†Fifth National Population Census of China (2000)†stats.example.org】")
    assert "# 【1†Seventh National Population Census of China (2020)†stats.example.org】" in search.content
    assert "dumplings" not in search.content.lower()

    # mclick: both pages quoted with their ids
    quotes = obs[1]
    assert quotes.metadata == "quote_result"
    assert "【0†Fifth National Population Census of China (2000)】" in quotes.content
    assert "1,265,830,000" in quotes.content and "1,411,778,724" in quotes.content

    # python: the kernel's output holds the CAGR, computed here independently
    expected = (1_411_778_724 / 1_265_830_000) ** (1 / 20) - 1
    assert abs(expected - 0.005473) < 1e-5
    assert obs[2].content.strip() == f"CAGR 2000-2020: {expected * 100:.4f}%"

    final = events[-1]
    assert isinstance(final, FinalEvent) and final.reason == "answer" and final.steps == 4
    assert "0.55%" in final.content and "【1†Seventh National Population Census" in final.content
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == final.content
    assert final.tokens > 0

    # the model saw each observation: the last prompt holds the tools and the python result
    assert len(backend.prompts) == 4
    last_prompt = tok.decode(backend.prompts[-1])
    assert "## simple_browser" in last_prompt and "## python" in last_prompt
    assert f"<|observation|>\nCAGR 2000-2020: {expected * 100:.4f}%" in last_prompt
    assert backend.prompts[-1] == tok.encode_chat(agent.messages[:-1], tools=agent.tool_specs())

    # the session is in SQLite; a new agent resumes it and sees the whole history
    sid = agent.session_id
    assert [m.role for m in store.load(sid)] == ["user"] + ["assistant", "observation"] * 3 + ["assistant"]
    follow_up = ReplayBackend(["\nThe 2000 figure came from the fifth census【0†Fifth National Population "
                               "Census of China (2000)】."], tok)
    resumed = Agent(follow_up, [BrowserTool(LocalSearch(DOCS))], store=SessionStore(tmp_path / "sessions.db"),
                    session_id=sid)
    answer = resumed.ask("Where did the 2000 figure come from?")
    assert answer.reason == "answer" and "fifth census" in answer.content
    prompt = tok.decode(follow_up.prompts[0])
    assert TASK in prompt and "CAGR 2000-2020" in prompt
    assert len(store.load(sid)) == 10
    assert render(store.load(sid)[:8]) == render(agent.messages)


def test_python_tool_state_figures_and_mnt_data(tmp_path):
    """State persists across calls, /mnt/data is the session directory, figures come back as PNG files."""
    with PythonTool(tmp_path / "data") as py:
        assert py.run("x = 41").content == "[executed, no output]"
        assert py.run("x + 1").content == "42"
        obs = py.run("open('/mnt/data/result.txt', 'w').write('saved')\n"
                     "import matplotlib.pyplot as plt\nplt.plot([2000, 2020], [1.27, 1.41])\nplt.show()")
        assert not obs.is_error, obs.content
        assert (tmp_path / "data" / "result.txt").read_text() == "saved"
        assert len(obs.files) == 1 and f"[image saved to {obs.files[0]}]" in obs.content
        with open(obs.files[0], "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        err = py.run("1 / 0")
        assert err.is_error and err.content.endswith("ZeroDivisionError: division by zero")


def test_rendered_history_is_a_valid_glm4_conversation():
    """The agent's history renders like any GLM-4 conversation (tool call metadata, observation labels)."""
    msgs = [Message("user", "q"), Message("assistant", 'search("x")', "simple_browser"),
            Message("observation", "# 【0†t†h】\ns", "browser_result"), Message("assistant", "a")]
    text = render(msgs, tools=[{"type": "simple_browser"}])
    assert '<|assistant|>simple_browser\nsearch("x")<|observation|>browser_result\n# 【0†t†h】' in text
