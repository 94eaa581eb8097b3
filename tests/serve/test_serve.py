"""The OpenAI-compatible server: a real uvicorn server on 127.0.0.1, the real `openai` client,
the embedded nano agent model."""

import contextlib
import json
import socket
import time

import openai
import pytest

from live_server import running
from openglm.chat import to_openai_messages
from openglm.data.synth import generate_tasks

NAME = "glm-nano"


@contextlib.contextmanager
def serving(model, tok):
    """create_app(model, tok) on a free port of 127.0.0.1 in a real uvicorn server -> an openai client."""
    from openglm.serve import create_app

    with running(create_app(model, tok, NAME)) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def client():
    from openglm.cli import load_for_inference

    with serving(*load_for_inference(None)) as c:
        yield c


@pytest.fixture(scope="module")
def cagr_task():
    """A held-out CAGR question in the system prompt and tool format the nano model was trained on."""
    task = next(t for t in generate_tasks(30, seed=123, split="heldout") if t.kind == "arith-cagr")
    return to_openai_messages(task.prompt)


def test_it_lists_its_model_and_serves_it_under_any_name(client):
    assert [m.id for m in client.models.list().data] == [NAME]
    r = client.chat.completions.create(model="glm-4-9b-chat", messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=2)
    assert r.model == NAME


def test_a_plain_chat_streams_the_same_text_it_returns_whole(client):
    messages = [{"role": "user", "content": "你好"}]
    whole = client.chat.completions.create(model=NAME, messages=messages, max_tokens=24)
    choice = whole.choices[0]
    assert choice.finish_reason in ("stop", "length") and choice.message.content
    assert whole.usage.prompt_tokens > 0 and 0 < whole.usage.completion_tokens <= 24
    chunks = list(client.chat.completions.create(model=NAME, messages=messages, max_tokens=24, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == choice.message.content
    assert chunks[-1].choices[0].finish_reason == choice.finish_reason


def test_the_model_calls_python_and_answers_from_its_output(client, cagr_task):
    messages, tools = cagr_task
    r = client.chat.completions.create(model=NAME, messages=messages, tools=tools, max_tokens=200)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "python"
    code = json.loads(call.function.arguments)["code"]
    assert "**" in code and "print(" in code  # a compound-growth formula
    result = str(eval(code.removeprefix("print(").removesuffix(")")))  # noqa: S307 (the model's own arithmetic)
    follow = messages + [choice.message.model_dump(exclude_none=True),
                         {"role": "tool", "tool_call_id": call.id, "content": result}]
    answer = client.chat.completions.create(model=NAME, messages=follow, tools=tools, max_tokens=120).choices[0]
    assert answer.finish_reason == "stop" and result in answer.message.content


def test_a_streamed_call_arrives_parsed_in_the_last_chunk(client, cagr_task):
    messages, tools = cagr_task
    chunks = list(client.chat.completions.create(model=NAME, messages=messages, tools=tools, max_tokens=200,
                                                 stream=True))
    last = chunks[-1].choices[0]
    assert last.finish_reason == "tool_calls" and last.delta.tool_calls[0].function.name == "python"
    assert not any(c.choices[0].delta.content for c in chunks)  # GLM call syntax never leaks as text


def test_stop_strings_cut_the_reply(client):
    messages = [{"role": "user", "content": "你好"}]
    full = client.chat.completions.create(model=NAME, messages=messages, max_tokens=24).choices[0].message.content
    stop = full[3:5]
    cut = client.chat.completions.create(model=NAME, messages=messages, max_tokens=24, stop=["", stop]).choices[0]
    assert cut.finish_reason == "stop" and cut.message.content == full[:full.index(stop)]


def test_tool_choice_none_offers_no_tools(client, cagr_task):
    messages, tools = cagr_task
    r = client.chat.completions.create(model=NAME, messages=messages, tools=tools, tool_choice="none", max_tokens=16)
    assert r.choices[0].finish_reason != "tool_calls" and r.choices[0].message.tool_calls is None


@pytest.mark.parametrize("kwargs, where", [
    (dict(messages=[]), "messages"),
    (dict(messages=[{"role": "robot", "content": "hi"}]), "messages[0].role"),
    (dict(messages=[{"role": "robot", "content": "hi"}], stream=True), "messages[0].role"),
    (dict(messages=[{"role": "user", "content": "hi"}], max_tokens=0), "max_tokens"),
    (dict(messages=[{"role": "user", "content": "很长 " * 3000}]), "context"),
])
def test_bad_requests_get_a_400_naming_the_problem_and_the_server_goes_on(client, kwargs, where):
    kwargs.setdefault("model", NAME)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(**kwargs)
    assert e.value.status_code == 400 and where in str(e.value)
    ok = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert ok.choices[0].message.content is not None


def test_concurrent_requests_take_turns_and_both_get_their_answer(client):
    from concurrent.futures import ThreadPoolExecutor

    questions = ["你好", "hello"]
    alone = [client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": q}], max_tokens=12)
             .choices[0].message.content for q in questions]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda q: client.chat.completions.create(
            model=NAME, messages=[{"role": "user", "content": q}], max_tokens=12).choices[0].message.content,
            questions))
    assert together == alone


def test_the_serve_command_answers_on_its_port_and_wants_its_key():
    import os
    import subprocess
    import sys

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "openglm.cli", "serve", "--port", str(port), "--name", "nano"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "OPENGLM_API_KEY": "s3cret"})
    try:
        deadline, health = time.time() + 120, None
        while health is None and time.time() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"{url}/health").json()
            except httpx.TransportError:
                time.sleep(0.2)
        assert health == {"status": "ok", "model": "nano"}, proc.stderr.read().decode() if proc.poll() else health
        denied = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer wrong"})
        assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(f"{url}/v1/models").status_code == 401
        models = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer s3cret"}).json()
        assert models["data"][0]["id"] == "nano"
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert b"s3cret" not in stderr


def test_the_agent_over_http_runs_as_it_does_in_process(client, tmp_path):
    """openglm's agent with OpenAIBackend against this server: the README's main job, same answer."""
    from openglm.agent import Agent, LocalBackend, OpenAIBackend
    from openglm.agent.tools import PythonTool
    from openglm.cli import load_for_inference

    task = "Revenue went from 120000 to 350000 in 10 years. Compute the CAGR (%)."
    with PythonTool(tmp_path / "data") as python:
        remote = Agent(OpenAIBackend(str(client.base_url), model=NAME), [python]).ask(task)
        local = Agent(LocalBackend(*load_for_inference(None)), [python]).ask(task)
    assert remote.reason == local.reason == "answer"
    assert remote.content == local.content and "11.3" in remote.content


def test_a_failure_inside_generation_is_an_error_reply_and_the_server_goes_on():
    """A fault injected into the real model's forward (the 4th call: mid-stream): a 500 in OpenAI's
    shape, or the stream's last event, which the openai client raises; then normal service."""
    from openglm.cli import load_for_inference

    model, tok = load_for_inference(None)
    calls, fail = [0], [True]

    def fault(*_):
        calls[0] += 1
        if fail[0] and calls[0] % 4 == 0:
            raise RuntimeError("injected fault")

    model.register_forward_pre_hook(fault)
    hi = [{"role": "user", "content": "hello"}]
    with serving(model, tok) as c:
        with pytest.raises(openai.InternalServerError) as e:
            c.chat.completions.create(model=NAME, messages=hi, max_tokens=12)
        assert e.value.status_code == 500 and "injected fault" in str(e.value)
        calls[0], got = 0, []
        with pytest.raises(openai.APIError, match="injected fault"):
            for chunk in c.chat.completions.create(model=NAME, messages=hi, max_tokens=12, stream=True):
                got.extend(ch.delta.content or "" for ch in chunk.choices)
        assert "".join(got)  # text arrived before the fault
        fail[0] = False
        reply = c.chat.completions.create(model=NAME, messages=hi, max_tokens=12)
        assert reply.choices[0].message.content and reply.choices[0].finish_reason in ("stop", "length")
