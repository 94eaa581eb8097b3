"""parse_assistant() / format_tool_call(): generated text <-> tool calls."""

import random

import pytest

from openglm.chat import AssistantReply, ToolCall, format_tool_call, parse_assistant


def test_plain_answer_is_content():
    assert parse_assistant("\n北京今天晴。") == AssistantReply(content="北京今天晴。", raw="\n北京今天晴。")


def test_plain_answer_keeps_its_whitespace():
    assert parse_assistant("\n  two\nlines \n").content == "  two\nlines \n"


def test_text_without_metadata_line_is_content():
    assert parse_assistant("Hello").content == "Hello"


def test_function_call_with_json_arguments():
    reply = parse_assistant('get_weather\n{"city": "北京", "days": 3}')
    assert reply.tool_calls == [ToolCall("get_weather", {"city": "北京", "days": 3})]
    assert (reply.content, reply.error) == ("", None)


def test_python_call_keeps_code_verbatim():
    code = "import math\nprint(math.pi)\n"
    assert parse_assistant("python\n" + code).tool_calls == [ToolCall("python", code)]


def test_cogview_call_is_the_prompt():
    assert parse_assistant("cogview\nA cat on a roof.").tool_calls == [ToolCall("cogview", "A cat on a roof.")]


@pytest.mark.parametrize(
    ("body", "parsed"),
    [
        (
            'search("北京 天气", recency_days=7)',
            {"function": "search", "args": ["北京 天气"], "kwargs": {"recency_days": 7}},
        ),
        ("search(query='q')", {"function": "search", "args": [], "kwargs": {"query": "q"}}),
        ("mclick([1, 3, 5])", {"function": "mclick", "args": [[1, 3, 5]], "kwargs": {}}),
        (
            'open_url("https://example.com/a?b=1")',
            {"function": "open_url", "args": ["https://example.com/a?b=1"], "kwargs": {}},
        ),
        ('  search("q")  \n', {"function": "search", "args": ["q"], "kwargs": {}}),
    ],
)
def test_browser_calls(body, parsed):
    assert parse_assistant("simple_browser\n" + body).tool_calls == [ToolCall("simple_browser", parsed)]


def test_metadata_line_spaces_are_ignored():
    assert parse_assistant(" get_weather \n{}").tool_calls == [ToolCall("get_weather", {})]


@pytest.mark.parametrize(
    ("call", "text"),
    [
        (ToolCall("get_weather", {"city": "北京"}), 'get_weather\n{"city": "北京"}'),
        (ToolCall.browser("search", "q", recency_days=7), 'simple_browser\nsearch("q", recency_days=7)'),
        (ToolCall.browser("mclick", [1, 3]), "simple_browser\nmclick([1, 3])"),
        (ToolCall("python", "print(1)"), "python\nprint(1)"),
    ],
)
def test_format_writes_what_the_model_writes(call, text):
    assert format_tool_call(call) == text


ROUND_TRIP = [
    ToolCall("get_weather", {"city": "北京", "days": [1, 2], "opts": {"unit": "°C", "x": None, "ok": True}}),
    ToolCall("no_args", {}),
    ToolCall('quote"fn', {"s": 'he said "hi"\\ \n\t'}),
    ToolCall("python", "for i in range(3):\n    print('中文', i)\n"),
    ToolCall("cogview", "A detailed watercolor of West Lake in spring, soft light."),
    ToolCall.browser("search", '北京 "天气" \\ 🌧️\nnext', recency_days=30),
    ToolCall.browser("search", query="only keyword"),
    ToolCall.browser("mclick", [0, 7, 42]),
    ToolCall.browser("mclick", ids=[]),
    ToolCall.browser("open_url", "https://example.com/路径?q=1&r='x'"),
]


@pytest.mark.parametrize("call", ROUND_TRIP, ids=lambda c: c.name)
def test_parse_inverts_format(call):
    assert parse_assistant(format_tool_call(call)) == AssistantReply(tool_calls=[call], raw=format_tool_call(call))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('get_weather\n{"city": "北京"', "bad JSON arguments for function 'get_weather'"),
        ("get_weather\n[1, 2]", "must be a JSON object"),
        ("get_weather\n", "empty arguments"),
        ("python\n   \n", "empty python code"),
        ("cogview\n", "empty cogview prompt"),
        ('simple_browser\nfetch("x")', "unknown simple_browser function 'fetch'"),
        ('simple_browser\nsearch("q"', "unparseable simple_browser call"),
        ("simple_browser\nsearch(x)", "literal arguments only"),
        ("simple_browser\n__import__('os').system('ls')", "unparseable simple_browser call"),
        ("simple_browser\nimport os", "unparseable simple_browser call"),
        ("simple_browser\nsearch()", "missing required argument 'query'"),
        ('simple_browser\nsearch("q", days=1)', "unexpected keyword argument 'days'"),
        ('simple_browser\nmclick("1, 2")', "list of ints"),
        ('simple_browser\nopen_url("a", "b")', "at most 1 argument"),
        ("simple_browser\nsearch(*['q'])", "*args"),
        ("simple_browser\n" + "[" * 100_000, "simple_browser"),
        ("get_weather\n" + "[" * 100_000, "bad JSON"),
    ],
)
def test_malformed_calls_are_errors_not_exceptions(text, fragment):
    reply = parse_assistant(text)
    assert fragment in reply.error
    assert reply.tool_calls == []


def test_non_string_input_is_an_error():
    assert "str" in parse_assistant(None).error


def test_several_calls_with_allow_multiple():
    text = '\n我查一下。<|assistant|>get_weather\n{"city": "北京"}<|assistant|>python\nprint(2)'
    reply = parse_assistant(text, allow_multiple=True)
    assert reply.content == "我查一下。"
    assert reply.tool_calls == [ToolCall("get_weather", {"city": "北京"}), ToolCall("python", "print(2)")]
    assert reply.error is None


def test_several_segments_without_allow_multiple_keep_the_first_and_report():
    reply = parse_assistant("python\nprint(1)<|assistant|>python\nprint(2)")
    assert reply.tool_calls == [ToolCall("python", "print(1)")]
    assert "allow_multiple=True" in reply.error


def test_leading_assistant_token_is_tolerated():
    assert parse_assistant("<|assistant|>\nhi").content == "hi"


def test_one_bad_segment_does_not_hide_the_good_ones():
    reply = parse_assistant("python\nprint(1)<|assistant|>f\n{oops", allow_multiple=True)
    assert reply.tool_calls == [ToolCall("python", "print(1)")]
    assert reply.error.startswith("segment 1: bad JSON")


def test_random_text_never_raises():
    rng = random.Random(0)
    alphabet = [
        "\n",
        "{",
        "}",
        '"',
        "(",
        ")",
        "[",
        "]",
        ",",
        "=",
        "a",
        "中",
        " ",
        "\\",
        "<|assistant|>",
        "python",
        "simple_browser",
        "cogview",
        "search",
        "mclick",
        "open_url",
        "1",
        "'",
    ]
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        for multiple in (False, True):
            reply = parse_assistant(text, allow_multiple=multiple)
            assert isinstance(reply, AssistantReply)


@pytest.mark.parametrize(
    ("name", "arguments"),
    [
        ("python", ""),
        ("python", {"code": "x"}),
        ("f", "not a dict"),
        ("a\nb", {}),
        ("simple_browser", {"function": "search", "args": [], "kwargs": {}}),
        ("simple_browser", {"function": "nope", "args": [], "kwargs": {}}),
    ],
)
def test_invalid_tool_calls_cannot_be_built(name, arguments):
    with pytest.raises(ValueError):
        ToolCall(name, arguments)
