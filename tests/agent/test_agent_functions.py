"""User functions as tools: typed Python functions, OpenAPI operations and MCP servers (real ones)."""

import socket
import subprocess
import sys
import time
from typing import Literal

import pytest

from openglm.agent import Agent, ObservationEvent, ReplayBackend, ToolCallEvent
from openglm.agent.tools import FunctionTool, MCPTools, ToolError, function_tool, load_functions, openapi_tools
from tests.agent.conftest import FIXTURES

MCP_SERVER = FIXTURES / "mcp_server.py"


def test_decorator_builds_the_schema_from_hints_and_docstring():
    @function_tool
    def convert(amount: float, currency: Literal["USD", "EUR"], tags: list[str] | None = None) -> str:
        """Convert money.

        Args:
            amount: how much
            currency: target currency
        """
        return f"{amount} {currency}"

    assert isinstance(convert, FunctionTool) and convert(1.5, "EUR") == "1.5 EUR"
    assert convert.spec() == {"type": "function", "function": {
        "name": "convert", "description": "Convert money.",
        "parameters": {"type": "object", "required": ["amount", "currency"], "properties": {
            "amount": {"type": "number", "description": "how much"},
            "currency": {"type": "string", "enum": ["USD", "EUR"], "description": "target currency"},
            "tags": {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}], "default": None},
        }}}}
    assert convert.run({"amount": 2, "currency": "USD"}).content == "2 USD"
    with pytest.raises(ToolError, match="at 'tags/1': 3 is not of type 'string'"):
        convert.run({"amount": 2, "currency": "USD", "tags": ["a", 3]})


def test_bad_definitions_are_refused_with_the_reason():
    def untyped(x):
        """No hints."""

    with pytest.raises(ValueError, match="parameter 'x' needs a type hint"):
        function_tool(untyped)
    with pytest.raises(ValueError, match="reserved for the built-in"):
        FunctionTool("python", "", {"type": "object"}, print)
    with pytest.raises(ValueError, match="two tools are named 'f'"):
        Agent(ReplayBackend([]), [FunctionTool("f", "", {"type": "object"}, print)] * 2)


def test_load_functions_from_a_file(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text("from openglm.agent.tools import function_tool\n\n@function_tool\n"
                    "def double(n: int) -> int:\n    '''Twice n.'''\n    return 2 * n\n\nhelper = 3\n")
    (tool,) = load_functions(path)
    assert tool.name == "double" and tool.run({"n": 21}).content == "42"
    (tmp_path / "empty.py").write_text("x = 1\n")
    with pytest.raises(ValueError, match="no @function_tool functions"):
        load_functions(tmp_path / "empty.py")


SPEC = {
    "openapi": "3.0.0",
    "paths": {
        "/cities/{city}/weather": {"get": {
            "operationId": "getWeather", "summary": "Weather of a city",
            "parameters": [{"name": "city", "in": "path", "required": True, "schema": {"type": "string"}},
                           {"name": "unit", "in": "query", "schema": {"type": "string", "enum": ["c", "f"]}}]}},
        "/notes": {"post": {
            "operationId": "createNote",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Note"}}}}}},
    },
    "components": {"schemas": {"Note": {"type": "object", "required": ["text"],
                                        "properties": {"text": {"type": "string"}}}}},
}


def test_openapi_operations_become_tools(http_server):
    http_server.route("GET", "/cities/S%C3%A3o%20Paulo/weather", lambda r: (200, {}, {"temp": 25, "q": r["query"]}))
    http_server.route("POST", "/notes", lambda r: (201, {}, {"id": 7, "text": r["json"]["text"]}))
    weather, note = openapi_tools(SPEC, base_url=http_server.url, headers={"X-Api-Key": "k-123"})
    assert weather.name == "getWeather" and not weather.needs_confirmation
    assert note.needs_confirmation  # POST changes something: ask first
    assert note.parameters["properties"]["body"]["required"] == ["text"]  # $ref resolved
    assert weather.run({"city": "São Paulo", "unit": "c"}).content == '{"temp": 25, "q": {"unit": ["c"]}}'
    assert http_server.requests[-1]["headers"]["X-Api-Key"] == "k-123"
    assert note.run({"body": {"text": "hello"}}).content == '{"id": 7, "text": "hello"}'
    with pytest.raises(ToolError, match="'city' is a required property"):
        weather.run({"unit": "c"})
    with pytest.raises(ToolError, match="HTTP 404"):
        weather.run({"city": "Nowhere"})


def test_mcp_stdio_server_tools_are_listed_called_and_answered(tmp_path):
    with MCPTools([sys.executable, str(MCP_SERVER)]) as server:
        tools = {t.name: t for t in server.tools}
        assert set(tools) == {"population_growth", "delete_everything"}
        growth = tools["population_growth"]
        assert growth.parameters["required"] == ["start", "end", "years"]
        assert not growth.needs_confirmation and tools["delete_everything"].needs_confirmation
        script = ['population_growth\n{"start": 1265830000, "end": 1411778724, "years": "twenty"}',
                  'population_growth\n{"start": 1265830000, "end": 1411778724, "years": 20}',
                  "\nAbout 0.55% a year."]
        agent = Agent(ReplayBackend(script), server.tools)
        events = list(agent.run("growth?"))
    obs = [e for e in events if isinstance(e, ObservationEvent)]
    assert obs[0].is_error and "'twenty' is not of type 'integer'" in obs[0].content
    expected = ((1411778724 / 1265830000) ** (1 / 20) - 1) * 100
    assert not obs[1].is_error and obs[1].content == f"{expected:.4f}%"
    assert events[-1].reason == "answer" and events[-1].content == "About 0.55% a year."
    assert "## population_growth" in agent.backend.tok.decode(agent.backend.prompts[0])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mcp_streamable_http_server():
    port = _free_port()
    proc = subprocess.Popen([sys.executable, str(MCP_SERVER), "http", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "MCP HTTP server did not start"
                time.sleep(0.1)
        with MCPTools(f"http://127.0.0.1:{port}/mcp") as server:
            (growth,) = [t for t in server.tools if t.name == "population_growth"]
            assert growth.run({"start": 100, "end": 121, "years": 2}).content == "10.0000%"
            agent = Agent(ReplayBackend(['delete_everything\n{"confirm_code": "x"}', "\nok"]), server.tools,
                          confirm=lambda call: True)
            events = list(agent.run("clean up"))
            assert [e.name for e in events if isinstance(e, ToolCallEvent)] == ["delete_everything"]
            assert "deleted (x)" in [e for e in events if isinstance(e, ObservationEvent)][0].content
    finally:
        proc.terminate()
        proc.wait(10)


def test_mcp_connection_failure_is_reported():
    with pytest.raises(ConnectionError, match="MCP server"):
        MCPTools([sys.executable, "-c", "import sys; sys.exit(3)"], connect_timeout_s=20)
