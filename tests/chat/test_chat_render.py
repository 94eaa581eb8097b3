"""render(): the GLM-4 prompt text, byte for byte the official template's output."""

import pytest

from openglm.chat import Message, render

SYSTEM = (
    "你是一个名为 ChatGLM 的人工智能助手。你是基于智谱AI训练的语言模型 GLM-4 模型开发的，"
    "你的任务是针对用户的问题和要求提供适当的答复和支持。"
)


@pytest.mark.parametrize("seed", range(80))
def test_random_conversation_matches_official_template(seed, random_conversation, jinja_render):
    messages, gen = random_conversation(seed)
    assert render(messages, add_generation_prompt=gen) == jinja_render(messages, gen)


@pytest.mark.parametrize("seed", range(0, 80, 7))
def test_message_objects_render_like_their_dicts(seed, random_conversation, jinja_render):
    messages, gen = random_conversation(seed)
    objects = [Message(m["role"], m["content"], m.get("metadata", ""), m.get("tools")) for m in messages]
    assert render(objects, add_generation_prompt=gen) == jinja_render(messages, gen)


def test_single_user_turn():
    assert render([{"role": "user", "content": "你好"}]) == "[gMASK]<sop><|user|>\n你好<|assistant|>"


def test_without_generation_prompt():
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"}]
    assert render(msgs, add_generation_prompt=False) == "[gMASK]<sop><|user|>\nhi<|assistant|>\nHello!"


def test_function_call_and_observation_turns():
    msgs = [
        {"role": "user", "content": "北京天气？"},
        {"role": "assistant", "metadata": "get_weather", "content": '{"city": "北京"}'},
        {"role": "observation", "content": '{"temp": 20}'},
        {"role": "assistant", "content": "北京 20 度。"},
    ]
    assert render(msgs, add_generation_prompt=False) == (
        "[gMASK]<sop><|user|>\n北京天气？"
        '<|assistant|>get_weather\n{"city": "北京"}'
        '<|observation|>\n{"temp": 20}'
        "<|assistant|>\n北京 20 度。"
    )


def test_empty_messages_are_skipped_with_their_metadata():
    msgs = [
        {"role": "system", "content": ""},
        {"role": "assistant", "metadata": "x", "content": ""},
        {"role": "user", "content": "q"},
    ]
    assert render(msgs) == "[gMASK]<sop><|user|>\nq<|assistant|>"


def test_function_tool_block_written_out_by_hand():
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"city": "str"}}}
    expected = (
        "[gMASK]<sop><|system|>\n" + SYSTEM + "\n\n# 可用工具\n\n## get_weather\n\n"
        "{\n"
        '    "name": "get_weather",\n'
        '    "parameters": {\n'
        '        "city": "str"\n'
        "    }\n"
        "}\n"
        "在调用上述函数时，请使用 Json 格式表示调用的参数。"
        "<|user|>\n天气<|assistant|>"
    )
    assert render([{"role": "system", "content": "", "tools": [tool]}, {"role": "user", "content": "天气"}]) == expected


def test_empty_tool_list_still_emits_the_tool_header():
    out = render([{"role": "system", "content": "", "tools": []}], add_generation_prompt=False)
    assert out == "[gMASK]<sop><|system|>\n" + SYSTEM + "\n\n# 可用工具"


def test_builtin_tool_sections_start_with_their_headings():
    out = render([{"role": "system", "content": "", "tools": [{"type": "python"}, {"type": "cogview"}]}])
    assert "\n\n# 可用工具\n\n## python\n\n当你向 `python` 发送包含 Python 代码的消息时" in out
    assert "\n\n## cogview\n\n如果用户的请求中包含了对图像的描述" in out
    assert out.endswith("持有中国立场并遵循中国社会主义价值观。<|assistant|>")


def test_tools_argument_equals_a_prepended_system_message(jinja_render):
    tools = [{"type": "simple_browser"}, {"type": "function", "function": {"name": "f"}}]
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    expected = jinja_render([{"role": "system", "content": "", "tools": tools}] + msgs)
    assert render(msgs, tools=tools) == expected


def test_tools_given_twice_is_an_error():
    with pytest.raises(ValueError, match="tools given twice"):
        render([{"role": "system", "content": "", "tools": []}], tools=[{"type": "python"}])


def test_none_metadata_and_content_read_as_empty():
    # Deliberate: the raw template would print "None" for metadata=None.
    assert (
        render([{"role": "user", "content": "a", "metadata": None}, {"role": "user", "content": None}])
        == "[gMASK]<sop><|user|>\na<|assistant|>"
    )


@pytest.mark.parametrize(
    ("messages", "pattern"),
    [
        ([{"role": "user", "content": "a"}, {"role": "user", "content": ["x"]}], r"messages\[1\]\.content"),
        ([{"role": "bot", "content": "a"}], r"messages\[0\]\.role"),
        ([{"role": "tool", "content": "a"}], r"messages\[0\]\.role.*from_openai"),
        ([{"content": "a"}], r"messages\[0\]\.role: missing"),
        ([{"role": "user", "content": "a", "metadata": 3}], r"messages\[0\]\.metadata"),
        ([{"role": "user", "content": "a", "metadata": "x\ny"}], r"messages\[0\]\.metadata"),
        ([{"role": "user", "content": "a", "tool_calls": []}], r"messages\[0\]: unknown field 'tool_calls'"),
        ([{"role": "system", "content": "", "tools": [{"type": "web"}]}], r"messages\[0\]\.tools\[0\]\.type"),
        (
            [{"role": "system", "content": "", "tools": [{"type": "function", "function": {}}]}],
            r"messages\[0\]\.tools\[0\]\.function\.name",
        ),
        ([{"role": "system", "content": "", "tools": {"type": "python"}}], r"messages\[0\]\.tools"),
        (["hello"], r"messages\[0\]"),
    ],
)
def test_malformed_messages_name_index_and_field(messages, pattern):
    with pytest.raises(ValueError, match=pattern):
        render(messages)
