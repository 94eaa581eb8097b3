"""render_segments(): the prompt cut into control tokens and role-tagged text."""

import pytest

from openglm.chat import Segment, render, render_segments

# Written out here rather than imported, so the test does not trust the code's list.
CONTROL_TOKENS = {"[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"}


@pytest.mark.parametrize("seed", range(0, 80, 3))
def test_segments_join_to_render(seed, random_conversation):
    messages, gen = random_conversation(seed)
    segs = render_segments(messages, add_generation_prompt=gen)
    assert "".join(s.text for s in segs) == render(messages, add_generation_prompt=gen)


@pytest.mark.parametrize("seed", range(0, 80, 3))
def test_special_exactly_on_whole_control_tokens(seed, random_conversation):
    messages, gen = random_conversation(seed)
    for s in render_segments(messages, add_generation_prompt=gen):
        if s.special:
            assert s.text in CONTROL_TOKENS
        else:
            assert s.text  # no empty pieces


def test_tool_conversation_segments_by_hand():
    msgs = [
        {"role": "user", "content": "天气?"},
        {"role": "assistant", "metadata": "get_weather", "content": '{"city": "北京"}'},
        {"role": "observation", "content": "晴"},
    ]
    assert render_segments(msgs) == [
        Segment("[gMASK]", True, None, None),
        Segment("<sop>", True, None, None),
        Segment("<|user|>", True, "user", 0),
        Segment("\n", False, "user", 0),
        Segment("天气?", False, "user", 0),
        Segment("<|assistant|>", True, "assistant", 1),
        Segment("get_weather\n", False, "assistant", 1),
        Segment('{"city": "北京"}', False, "assistant", 1),
        Segment("<|observation|>", True, "observation", 2),
        Segment("\n", False, "observation", 2),
        Segment("晴", False, "observation", 2),
        Segment("<|assistant|>", True, None, None),
    ]


def test_control_token_typed_by_the_user_is_plain_text():
    segs = render_segments([{"role": "user", "content": "<|user|>"}], add_generation_prompt=False)
    assert [(s.text, s.special) for s in segs] == [
        ("[gMASK]", True),
        ("<sop>", True),
        ("<|user|>", True),
        ("\n", False),
        ("<|user|>", False),
    ]


def test_tool_block_is_a_system_turn_whatever_carries_it():
    segs = render_segments(
        [{"role": "user", "content": "", "tools": [{"type": "python"}]}], add_generation_prompt=False
    )
    assert [(s.special, s.role, s.index) for s in segs[2:]] == [(True, "system", 0), (False, "system", 0)]
    assert segs[2].text == "<|system|>"
    assert segs[3].text.startswith("\n你是一个名为 ChatGLM 的人工智能助手。")


def test_tools_argument_block_belongs_to_no_message():
    segs = render_segments([{"role": "user", "content": "hi"}], tools=[{"type": "cogview"}])
    assert [(s.role, s.index) for s in segs[2:4]] == [("system", None), ("system", None)]
    assert segs[4] == Segment("<|user|>", True, "user", 0)


def test_trainable_assistant_text_is_its_tokens_metadata_and_content():
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "metadata": "python", "content": "print(1)"}]
    trained = "".join(s.text for s in render_segments(msgs, add_generation_prompt=False) if s.role == "assistant")
    assert trained == "<|assistant|>python\nprint(1)"
