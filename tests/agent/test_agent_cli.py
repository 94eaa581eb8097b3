"""`openglm agent`: mounted under a parent app as the lead does, against a loopback chat-completions server."""

import json

import pytest
import typer
from typer.testing import CliRunner

from openglm.agent.cli import app as agent_app
from openglm.agent.session import SessionStore
from tests.agent.conftest import DOCS

KEY = "sk-cli-secret-456"
runner = CliRunner()


@pytest.fixture(scope="module")
def main():
    root = typer.Typer()

    @root.command()
    def info() -> None:  # a sibling command, so `agent` really is a sub-app
        pass

    root.add_typer(agent_app, name="agent")
    return root


def browser_then_answer(http_server):
    """A chat-completions endpoint that searches first, then answers with what it found."""

    def chat(request):
        msgs = request["json"]["messages"]
        if msgs[-1]["role"] == "tool":
            return 200, {}, _completion({"content": "Japan counted 126,146,099 residents【0†Population of Japan】."})
        call = {"id": "c1", "type": "function", "function": {"name": "simple_browser", "arguments": json.dumps(
            {"function": "search", "args": ["Japan population census"], "kwargs": {}})}}
        return 200, {}, _completion({"content": None, "tool_calls": [call]})

    http_server.route("POST", "/v1/chat/completions", chat)


def _completion(message):
    return {"choices": [{"message": {"role": "assistant", **message}, "finish_reason": "stop"}],
            "usage": {"completion_tokens": 5}}


def test_task_shows_call_observation_and_answer(main, http_server, tmp_path, monkeypatch):
    browser_then_answer(http_server)
    monkeypatch.setenv("OPENGLM_API_KEY", KEY)
    r = runner.invoke(main, ["agent", "--endpoint", f"{http_server.url}/v1", "--tools", "browser", "--docs", str(DOCS),
                             "--home", str(tmp_path), "How many people live in Japan?", "--yes"])
    assert r.exit_code == 0, r.output
    assert "simple_browser" in r.output and 'search("Japan population census")' in r.output
    assert "# 【0†Population of Japan†stats.example.org】" in r.output
    assert "Japan counted 126,146,099 residents" in r.output
    assert KEY not in r.output
    assert http_server.requests[0]["headers"]["Authorization"] == f"Bearer {KEY}"
    (session,) = SessionStore(tmp_path / "sessions.db").sessions()
    assert session.title == "How many people live in Japan?" and session.messages == 4


def test_json_events_and_resume(main, http_server, tmp_path):
    browser_then_answer(http_server)
    base = ["agent", "--endpoint", f"{http_server.url}/v1", "--tools", "browser", "--docs", str(DOCS),
            "--home", str(tmp_path), "--json"]
    r = runner.invoke(main, [*base, "Japan?"])
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert [e["type"] for e in events][:2] == ["tool_call", "observation"] and events[-1]["type"] == "final"
    (session,) = SessionStore(tmp_path / "sessions.db").sessions()
    r = runner.invoke(main, [*base, "--session", session.id, "And again?"])
    assert r.exit_code == 0, r.output
    assert len(SessionStore(tmp_path / "sessions.db").load(session.id)) == 8
    r = runner.invoke(main, [*base, "--session", "nope", "x"])
    assert r.exit_code != 0 and "no session 'nope'" in r.output


def test_interactive_mode_with_functions_and_a_confirmation_prompt(main, http_server, tmp_path):
    funcs = tmp_path / "funcs.py"
    funcs.write_text("from openglm.agent.tools import function_tool\n\n@function_tool(confirm=True)\n"
                     "def wipe(path: str) -> str:\n    '''Delete a path.'''\n    return 'wiped ' + path\n")

    def chat(request):
        msgs = request["json"]["messages"]
        if msgs[-1]["role"] == "tool":
            return 200, {}, _completion({"content": "Result: " + msgs[-1]["content"]})
        call = {"id": "c1", "type": "function", "function": {"name": "wipe", "arguments": '{"path": "/data"}'}}
        return 200, {}, _completion({"content": None, "tool_calls": [call]})

    http_server.route("POST", "/v1/chat/completions", chat)
    r = runner.invoke(main, ["agent", "--endpoint", f"{http_server.url}/v1", "--tools", "", "--functions", str(funcs),
                             "--home", str(tmp_path)], input="clean up\nn\nclean up again\ny\n/exit\n")
    assert r.exit_code == 0, r.output
    assert "Result: Error: the user did not allow this call to wipe" in r.output
    assert "Result: wiped /data" in r.output


def test_bad_options_are_explained(main, tmp_path):
    r = runner.invoke(main, ["agent", "--tools", "python,shell", "--home", str(tmp_path), "x"])
    assert r.exit_code != 0 and "unknown tool 'shell'" in r.output
    r = runner.invoke(main, ["agent", "--tools", "cogview", "--home", str(tmp_path), "x"])
    assert r.exit_code != 0 and "--images-endpoint" in r.output


def test_local_model_from_the_command_line(main, tmp_path):
    r = runner.invoke(main, ["agent", "--preset", "nano", "--tools", "", "--home", str(tmp_path), "--max-steps", "1",
                             "--max-new-tokens", "8", "--json", "hi"])
    assert r.exit_code == 0, r.output
    final = json.loads(r.stdout.strip().splitlines()[-1])
    assert final["type"] == "final" and final["steps"] == 1 and final["tokens"] <= 8
