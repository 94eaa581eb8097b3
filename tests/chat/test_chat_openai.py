"""OpenAI chat-completions messages <-> GLM-4 messages."""

import json

import pytest

from openglm.chat import (
    AssistantReply,
    Message,
    ToolCall,
    from_openai,
    parse_assistant,
    render,
    to_openai,
    to_openai_messages,
)

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "查询天气",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}

OPENAI_CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "北京和上海天气？"},
    {
        "role": "assistant",
        "content": "我来查一下。",
        "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"北京"}'}},
            {"id": "call_b", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"上海"}'}},
        ],
    },
    {"role": "tool", "tool_call_id": "call_a", "content": "晴"},
    {"role": "tool", "tool_call_id": "call_b", "content": "雨"},
    {"role": "assistant", "content": "北京晴，上海雨。"},
]

GLM_CONVERSATION = [
    Message("system", "", tools=[WEATHER_TOOL]),
    Message("system", "Be brief."),
    Message("user", "北京和上海天气？"),
    Message("assistant", "我来查一下。"),
    Message("assistant", '{"city": "北京"}', metadata="get_weather"),
    Message("assistant", '{"city": "上海"}', metadata="get_weather"),
    Message("observation", "晴"),
    Message("observation", "雨"),
    Message("assistant", "北京晴，上海雨。"),
]


def test_from_openai_maps_calls_and_results_to_glm_turns():
    assert from_openai(OPENAI_CONVERSATION, tools=[WEATHER_TOOL]) == GLM_CONVERSATION


def test_from_openai_renders_calls_the_way_the_model_writes_them():
    prompt = render(from_openai(OPENAI_CONVERSATION[1:3]), add_generation_prompt=False)
    assert prompt == (
        "[gMASK]<sop><|user|>\n北京和上海天气？<|assistant|>\n我来查一下。"
        '<|assistant|>get_weather\n{"city": "北京"}<|assistant|>get_weather\n{"city": "上海"}'
    )


def test_openai_round_trip_keeps_the_conversation_up_to_ids():
    messages, tools = to_openai_messages(from_openai(OPENAI_CONVERSATION, tools=[WEATHER_TOOL]))
    assert tools == [WEATHER_TOOL]
    calls = messages[2]["tool_calls"]
    # Ids are fresh; compare the rest, with arguments compared as JSON values.
    expected_calls = OPENAI_CONVERSATION[2]["tool_calls"]
    assert [(c["type"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        (c["type"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in expected_calls
    ]
    assert [m["tool_call_id"] for m in messages[3:5]] == [c["id"] for c in calls]
    strip = lambda m: {k: v for k, v in m.items() if k not in ("tool_calls", "tool_call_id")}  # noqa: E731
    assert [strip(m) for m in messages] == [strip(m) for m in OPENAI_CONVERSATION]


def test_glm_round_trip_through_openai_with_builtin_tools():
    glm = [
        Message("system", "", tools=[{"type": "python"}, {"type": "simple_browser"}, {"type": "cogview"}]),
        Message("user", "画一只猫，再算 2**10"),
        Message("assistant", 'search("猫", recency_days=3)', metadata="simple_browser"),
        Message("observation", "【0†猫†example.com】", metadata=""),
        Message("assistant", "print(2**10)", metadata="python"),
        Message("observation", "1024"),
        Message("assistant", "A cute cat on a sofa.", metadata="cogview"),
        Message("observation", "![image](https://x/cat.png)"),
        Message("assistant", "完成。"),
    ]
    assert from_openai(*to_openai_messages(glm)) == glm


def test_builtin_call_arguments_are_wrapped_json():
    msg = to_openai(parse_assistant("python\nprint('你好')"))
    assert msg["content"] is None
    assert json.loads(msg["tool_calls"][0]["function"]["arguments"]) == {"code": "print('你好')"}
    browser = to_openai(AssistantReply(tool_calls=[ToolCall.browser("mclick", [1, 2])]))
    assert json.loads(browser["tool_calls"][0]["function"]["arguments"]) == {
        "function": "mclick",
        "args": [[1, 2]],
        "kwargs": {},
    }


def test_to_openai_function_call_message_shape():
    msg = to_openai(parse_assistant('get_weather\n{"city": "北京"}'))
    (call,) = msg["tool_calls"]
    assert call["id"].startswith("call_") and len(call["id"]) > len("call_")
    assert call["type"] == "function"
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "北京"}'}


def test_to_openai_plain_answer_has_no_tool_calls():
    assert to_openai(parse_assistant("\n你好")) == {"role": "assistant", "content": "你好"}


def test_to_openai_ids_are_unique():
    reply = AssistantReply(tool_calls=[ToolCall("f", {}) for _ in range(20)])
    assert len({c["id"] for c in to_openai(reply)["tool_calls"]}) == 20


def test_to_openai_refuses_a_malformed_reply():
    with pytest.raises(ValueError, match="bad JSON"):
        to_openai(parse_assistant("f\n{oops"))


@pytest.mark.parametrize(
    ("messages", "tools", "pattern"),
    [
        ([{"role": "critic", "content": "x"}], None, r"messages\[0\]\.role"),
        (
            [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{bad"}}]}],
            None,
            r"messages\[0\]\.tool_calls\[0\]\.function\.arguments: bad JSON",
        ),
        (
            [{"role": "assistant", "tool_calls": [{"function": {"name": "python", "arguments": '{"src": "x"}'}}]}],
            None,
            r"python expects \{'code': str\}",
        ),
        ([{"role": "user", "content": [{"type": "image_url"}]}], None, r"messages\[0\]\.content\[0\]"),
        ([], [{"type": "retrieval"}], r"tools\[0\]\.type"),
    ],
)
def test_from_openai_errors_say_where(messages, tools, pattern):
    with pytest.raises(ValueError, match=pattern):
        from_openai(messages, tools)


def test_observation_without_a_call_cannot_become_openai():
    with pytest.raises(ValueError, match=r"messages\[1\]: observation without"):
        to_openai_messages([Message("user", "hi"), Message("observation", "42")])


def test_text_parts_are_joined():
    assert from_openai(
        [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
    ) == [Message("user", "ab")]
