"""Grammar-constrained replies: text, or offered tools with arguments that fit their schemas."""

import logging

import jsonschema
import pytest
import torch

from openglm import GLM, GLMConfig
from openglm.agent import Agent, Limits, LocalBackend, ToolCallEvent
from openglm.chat import parse_assistant
from openglm.infer import Sampling, generate_ids
from openglm.infer.constrain import ToolGrammar, reply_grammar
from openglm.speedrun import EMBEDDED_DIR
from openglm.tokenizer import default_tokenizer, load_tokenizer

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city"]}}}
TOOLS = [{"type": "python"}, {"type": "simple_browser"}, WEATHER]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(EMBEDDED_DIR)


def accepts(tok, tools, text: str) -> bool:
    """Whether every token of `text`, then a stop id, is allowed in turn."""
    g = ToolGrammar(tok, tools)
    for i in tok.encode(text, allow_special={"<|assistant|>"}) + [tok.token_id("<|observation|>")]:
        if not g.mask(tok.vocab_size, "cpu")[i]:
            return False
        g.push(i)
    return True


@pytest.mark.parametrize("text", [
    "\nHello, 你好!",
    "python\nprint(round(1.5 ** 3, 2))",
    "python\nprint([1 if x else 2 for x in (0, 1)], 3 not in {4}, 5 .real)",
    'simple_browser\nsearch("Lagos population 2020")',
    'simple_browser\nsearch("雨", recency_days=7)',
    "simple_browser\nmclick([0, 3])",
    'simple_browser\nopen_url("https://example.org/a")',
    'get_weather\n{"city": "北京"}',
    'get_weather\n{"city": "Oslo", "days": 3}',
    '\nLet me look.<|assistant|>get_weather\n{"city": "Oslo"}',
])
def test_well_formed_replies_are_allowed(tok, text):
    assert accepts(tok, TOOLS, text)
    assert parse_assistant(text, allow_multiple=True).error is None  # the grammar admits only what parses


@pytest.mark.parametrize("text, why", [
    ("cogview\na cat", "a tool not offered"),
    ("Hello", "no metadata line"),
    ('get_weather\n{"town": "Oslo"}', "a key the schema does not list"),
    ('get_weather\n{"days": 3}', "a required key missing"),
    ('get_weather\n{"city": 3}', "a wrong type"),
    ('get_weather\n{"city": "Oslo", "days": 2.5}', "a float for an integer"),
    ('get_weather\n{"city":"Oslo"}', "spacing json.dumps does not write"),
    ('get_weather\n{"city": "Oslo"} and more', "text after the arguments"),
    ('simple_browser\nfetch("x")', "an unknown browser function"),
    ("simple_browser\nmclick(3)", "mclick without a list"),
    ("python\n", "empty code"),
    ("python\nprint(1))", "a bracket closed twice"),
    ("python\nprint((2 + 3)", "a bracket left open"),
    ("python\nprint('abc)", "a string left open"),
    ("python\nprint(224262变为1)", "non-ASCII outside strings (copied question text)"),
    ("python\nx = 211light", "a name run into a number"),
    ("python\nprint(54435 * 122. I need it)", "a name after a number and a space (the question run on)"),
    ("python\nprint(1 2)", "two numbers side by side"),
])
def test_malformed_replies_are_refused(tok, text, why):
    assert not accepts(tok, TOOLS, text), why


def test_python_calls_admit_real_programs(tok):
    """Whole stdlib modules (strings of every kind, comments, continuations, nesting) pass the code grammar."""
    import inspect
    import json.decoder
    import json.encoder

    for module in (json.decoder, json.encoder, inspect):
        source = inspect.getsource(module)
        assert source.isascii()
        assert accepts(tok, [{"type": "python"}], "python\n" + source), module.__name__
    assert accepts(tok, [{"type": "python"}], 'python\nprint(f"{3:.2f} 元")  # 注释\ns = \'\'\'a\nb\'\'\'')


def test_no_tools_means_text_only(tok):
    assert accepts(tok, [], "\nI can only talk.")
    assert not accepts(tok, [], "python\nprint(1)")


def test_a_schema_llguidance_cannot_enforce_falls_back_to_any_object_with_a_warning(tok, caplog):
    odd = {"type": "function", "function": {"name": "lookbehind", "parameters": {
        "type": "object", "properties": {"a": {"type": "string", "pattern": "(?<=x)y"}}}}}
    with caplog.at_level(logging.WARNING, logger="openglm.infer.constrain"):
        assert accepts(tok, [odd], 'lookbehind\n{"anything": [1, 2]}')
    assert "lookbehind" in caplog.text and "cannot be enforced" in caplog.text


def test_the_grammar_runs_on_the_full_glm4_vocabulary():
    big = default_tokenizer(100_270)  # all of cl100k's ranks + GLM-4's specials
    assert big.vocab_size > 100_000
    assert accepts(big, TOOLS, 'get_weather\n{"city": "上海", "days": 2}')
    assert not accepts(big, TOOLS, 'get_weather\n{"city": "上海", "extra": 1}')


def test_sampled_replies_of_a_random_model_follow_the_grammar(tok):
    torch.manual_seed(0)
    model = GLM(GLMConfig.from_depth(2, vocab_size=tok.vocab_size)).eval()
    prompt = [tok.encode("what now?")]
    only_weather = [WEATHER]
    valid_prefixes = ("\n", 'get_weather\n{"city": "')
    free, constrained = [], []
    for seed in range(8):
        sampling = Sampling(temperature=1.0, seed=seed)
        free.append(tok.decode([t for (t,) in generate_ids(model, prompt, 12, sampling)]))
        c = ToolGrammar(tok, only_weather)
        constrained.append(tok.decode([t for (t,) in generate_ids(model, prompt, 12, sampling, constraint=c)]))

    def fits(s):
        return any(s.startswith(p) or p.startswith(s) for p in valid_prefixes)
    assert not all(fits(s) for s in free)  # the constraint is what does it
    assert all(fits(s) for s in constrained), constrained


def test_a_constraint_takes_one_prompt(tok):
    model = GLM(GLMConfig.from_depth(2, vocab_size=tok.vocab_size)).eval()
    with pytest.raises(ValueError, match="one prompt"):
        next(generate_ids(model, [[1, 2], [3, 4]], 4, constraint=ToolGrammar(tok, TOOLS)))


def test_the_grammar_text_names_each_offered_tool():
    g = reply_grammar(TOOLS)
    assert '"python\\n"' in g and '"simple_browser\\n" browser_call' in g
    assert '"get_weather\\n" %json' in g and '"additionalProperties": false' in g


def test_the_embedded_agent_calls_only_given_tools_with_arguments_that_fit(tok):
    # Unconstrained, the embedded model answers greetings with `print(city * Good ...)` even
    # when python is not offered, and names convert_units' arguments as in its training data
    # (`from_unit`), not as this schema does.
    from openglm.agent.tools import function_tool
    from openglm.io import load_model

    @function_tool
    def convert_units(value: float, unit_from: str, unit_to: str) -> dict:
        """Convert a value between units."""
        return {"value": value}

    model = load_model(EMBEDDED_DIR).for_inference()
    agent = Agent(LocalBackend(model, tok), [convert_units], limits=Limits(max_steps=1))
    schema = convert_units.spec()["function"]["parameters"]
    for question in ("Good morning.", "Reserve a hotel room in Vienna.", "Convert 5 km to mile."):
        calls = [e for e in agent.run(question) if isinstance(e, ToolCallEvent)]
        assert all(c.name == "convert_units" for c in calls), calls
        for c in calls:
            jsonschema.validate(c.arguments, schema)
