"""Model backends: an OpenAI-compatible server on 127.0.0.1 (tools / tool_calls), and the real local model."""

import base64
import io
import json

import pytest
import torch

from openglm import GLM, GLMConfig
from openglm.agent import (
    Agent,
    FinalEvent,
    Limits,
    LocalBackend,
    ObservationEvent,
    OpenAIBackend,
    ReplayBackend,
    TextDelta,
    ToolCallEvent,
    to_dict,
)
from openglm.agent.backends import to_wire
from openglm.agent.events import REASONS
from openglm.agent.tools import CogViewTool, DiffusersImages, OpenAIImages, function_tool
from openglm.chat import Message
from openglm.tokenizer import default_tokenizer

API_KEY = "sk-loopback-test-key-123"


@function_tool
def get_weather(city: str) -> str:
    """Current weather of a city."""
    return f"{city}: 21°C, sunny"


def completion(message: dict, finish: str = "stop") -> dict:
    return {"id": "cmpl-1", "object": "chat.completion", "model": "glm-4-9b-chat",
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 12, "total_tokens": 112}}


def test_openai_compatible_tool_round_trip(http_server):
    def chat(request):
        assert request["headers"]["Authorization"] == f"Bearer {API_KEY}"
        body = request["json"]
        names = [t["function"]["name"] for t in body["tools"]]
        assert names == ["get_weather"] and body["model"] == "glm-4-9b-chat" and body["parallel_tool_calls"] is False
        msgs = body["messages"]
        if msgs[-1]["role"] == "user":
            call = {"id": "call_abc", "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "北京"'}}  # malformed on purpose
            if sum(m["role"] == "tool" for m in msgs) == 0 and len(msgs) > 1:
                raise AssertionError("unexpected history")
            return 200, {}, completion({"content": None, "tool_calls": [call]}, "tool_calls")
        assert msgs[-1]["role"] == "tool"
        calls = [c for m in msgs if m["role"] == "assistant" for c in m.get("tool_calls") or []]
        assert msgs[-1]["tool_call_id"] == calls[-1]["id"]  # each result answers its call
        if len(calls) == 1:
            # the malformed arguments went back verbatim, next to the error observation
            assert calls[0]["function"]["arguments"] == '{"city": "北京"'
            assert "bad JSON arguments" in msgs[-1]["content"]
            good = {"id": "call_def", "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "北京"}'}}
            return 200, {}, completion({"content": "Let me check.", "tool_calls": [good]}, "tool_calls")
        assert msgs[-1]["content"] == "北京: 21°C, sunny"
        return 200, {}, completion({"content": "北京现在 21°C，晴。"})

    http_server.route("POST", "/v1/chat/completions", chat)
    backend = OpenAIBackend(f"{http_server.url}/v1", api_key=API_KEY)
    agent = Agent(backend, [get_weather])
    events = list(agent.run("北京天气怎么样？"))
    obs = [e for e in events if isinstance(e, ObservationEvent)]
    assert [o.is_error for o in obs] == [True, False] and obs[1].content == "北京: 21°C, sunny"
    final = events[-1]
    assert isinstance(final, FinalEvent) and final.reason == "answer" and final.content == "北京现在 21°C，晴。"
    assert final.tokens == 36 and len(http_server.requests) == 3
    # text the model wrote next to a call streams too
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Let me check.北京现在 21°C，晴。"
    # the key never shows up in what the agent reports
    assert API_KEY not in repr(backend) and all(API_KEY not in json.dumps(to_dict(e)) for e in events)
    http_server.route("POST", "/v1/chat/completions", lambda r: (503, {}, "overloaded"))
    failed = agent.ask("again")
    assert failed.reason == "backend_error" and "HTTP 503" in failed.content and API_KEY not in failed.content


def test_builtin_tools_on_the_openai_wire():
    history = [Message("user", "plot"), Message("assistant", "print(1)", "python"), Message("observation", "1")]
    wire, tools = to_wire(history, [{"type": "python"}, {"type": "simple_browser"}])
    assert tools[0]["type"] == "function" and tools[0]["function"]["name"] == "python"
    assert tools[0]["function"]["parameters"]["required"] == ["code"]
    assert tools[1]["function"]["parameters"]["properties"]["function"]["enum"] == ["search", "mclick", "open_url"]
    call = wire[1]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == {"code": "print(1)"}
    assert wire[2] == {"role": "tool", "tool_call_id": call["id"], "content": "1"}


def test_local_model_runs_the_agent_end_to_end():
    """The embedded model (random nano weights) drives the loop: noise, but a well-formed, bounded run."""
    torch.manual_seed(0)
    model, tok = GLM(GLMConfig.from_preset("nano")).eval(), default_tokenizer()
    backend = LocalBackend(model, tok, temperature=1.0, seed=0)
    agent = Agent(backend, [get_weather], limits=Limits(max_steps=3, max_turn_tokens=24, max_tokens=60))
    events = list(agent.run("北京天气怎么样？"))
    final = events[-1]
    assert isinstance(final, FinalEvent) and final.reason in REASONS
    assert sum(isinstance(e, FinalEvent) for e in events) == 1
    assert final.steps <= 3 and 0 < final.tokens <= 60
    for i, e in enumerate(events):
        if isinstance(e, ObservationEvent):
            assert isinstance(events[i - 1], ToolCallEvent) and events[i - 1].step == e.step
    # what the model saw is exactly the rendered conversation with the tools block
    first_prompt = tok.encode_chat([Message("user", "北京天气怎么样？")], tools=[get_weather.spec()])
    assert len(first_prompt) < model.config.max_seq_len
    assert agent.messages[0].content == "北京天气怎么样？"


def _png() -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    plt.imsave(buf, [[0.0, 1.0], [1.0, 0.0]], format="png")
    return buf.getvalue()


def test_cogview_through_an_images_endpoint(http_server, tmp_path):
    png = _png()

    def generate(request):
        assert request["headers"]["Authorization"] == "Bearer img-key" and request["json"]["n"] == 1
        if "url" in request["json"]["prompt"]:
            return 200, {}, {"data": [{"url": f"{http_server.url}/img.png"}]}
        return 200, {}, {"data": [{"b64_json": base64.b64encode(png).decode()}]}

    http_server.route("POST", "/v1/images/generations", generate)
    http_server.route("GET", "/img.png", lambda r: (200, {"Content-Type": "image/png"}, png))
    tool = CogViewTool(OpenAIImages(f"{http_server.url}/v1", "img-key"), tmp_path / "out")
    agent = Agent(ReplayBackend(["cogview\nA red panda eating bamboo, watercolor", "cogview\nsame but via url",
                                 "\nHere it is."]), [tool])
    events = list(agent.run("画一只小熊猫"))
    obs = [e for e in events if isinstance(e, ObservationEvent)]
    assert obs[0].metadata == "cogview_result" and len(obs[0].files) == 1
    assert obs[0].content == f"![A red panda eating bamboo, watercolor]({obs[0].files[0]})"
    assert open(obs[0].files[0], "rb").read() == png
    assert obs[1].content.endswith(f"URL: {http_server.url}/img.png") and open(obs[1].files[0], "rb").read() == png
    assert "img-key" not in repr(tool.backend)


def test_diffusers_backend_explains_a_missing_install(monkeypatch, tmp_path):
    monkeypatch.setitem(__import__("sys").modules, "diffusers", None)
    with pytest.raises(ImportError, match="pip install diffusers"):
        DiffusersImages(tmp_path)


def test_replay_backend_goes_through_the_tokenizer():
    tok = default_tokenizer()
    backend = ReplayBackend(['get_weather\n{"city": "北京"}<|assistant|>python\nprint(1)'], tok)
    items = list(backend.stream([Message("user", "hi")], [], max_tokens=100))
    assert items[-1].text == 'get_weather\n{"city": "北京"}<|assistant|>python\nprint(1)'
    assert items[-1].tokens == len(tok.encode(items[-1].text, allow_special={"<|assistant|>"}))
    assert backend.prompts[0] == tok.encode_chat([Message("user", "hi")])
