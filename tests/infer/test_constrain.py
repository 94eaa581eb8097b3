"""Constrained reply openings: only text or an offered tool can start a GLM-4 reply segment."""

import pytest
import torch

from openglm import GLM, GLMConfig
from openglm.agent import Agent, LocalBackend, ToolCallEvent
from openglm.infer import Sampling, generate_ids
from openglm.infer.constrain import ReplyOpening, tool_names
from openglm.speedrun import EMBEDDED_DIR
from openglm.tokenizer import load_tokenizer

OPENINGS = ["\n", "get_weather\n", "python\n"]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(EMBEDDED_DIR)


def _allowed_texts(tok, mask):
    return {tok.decode([i]) for i in mask.nonzero().flatten().tolist()}


def test_tool_names_of_functions_and_builtins():
    specs = [{"type": "python"}, {"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    assert tool_names(specs) == ["python", "get_weather"]


def test_the_first_token_must_begin_an_opening(tok):
    c = ReplyOpening(tok, OPENINGS)
    texts = _allowed_texts(tok, c.mask(tok.vocab_size, "cpu"))
    assert "\n" in texts and "python" in texts
    assert all(any(o.startswith(t) or t.startswith(o) for o in OPENINGS) for t in texts)
    assert "print" not in texts and "Hello" not in texts
    assert not any(tok.is_special(i) for i in c.mask(tok.vocab_size, "cpu").nonzero().flatten().tolist())


def test_decoding_is_free_after_an_opening_and_constrained_again_after_a_restart(tok):
    restart = tok.token_id("<|assistant|>")
    c = ReplyOpening(tok, OPENINGS, restart_id=restart)
    for i in tok.encode("get_weather"):
        assert c.mask(tok.vocab_size, "cpu") is not None
        c.push(i)
    after_name = _allowed_texts(tok, c.mask(tok.vocab_size, "cpu"))
    assert "\n" in after_name and all(t.startswith("\n") for t in after_name)
    c.push(tok.encode("\n")[0])
    assert c.mask(tok.vocab_size, "cpu") is None
    c.push(restart)
    assert c.mask(tok.vocab_size, "cpu") is not None


def test_sampled_replies_of_a_random_model_open_only_as_allowed(tok):
    torch.manual_seed(0)
    model = GLM(GLMConfig.from_depth(2, vocab_size=tok.vocab_size)).eval()
    prompt = [tok.encode("what now?")]
    free, constrained = [], []
    for seed in range(8):
        sampling = Sampling(temperature=1.0, seed=seed)
        free.append(tok.decode([t for (t,) in generate_ids(model, prompt, 8, sampling)]))
        c = ReplyOpening(tok, OPENINGS)
        constrained.append(tok.decode([t for (t,) in generate_ids(model, prompt, 8, sampling, constraint=c)]))
    assert not all(any(s.startswith(o) for o in OPENINGS) for s in free)  # the constraint is what does it
    assert all(any(s.startswith(o) for o in OPENINGS) for s in constrained), constrained


def test_a_constraint_takes_one_prompt(tok):
    model = GLM(GLMConfig.from_depth(2, vocab_size=tok.vocab_size)).eval()
    with pytest.raises(ValueError, match="one prompt"):
        next(generate_ids(model, [[1, 2], [3, 4]], 4, constraint=ReplyOpening(tok, OPENINGS)))


def test_the_embedded_agent_calls_no_tool_it_was_not_given(tok):
    # Unconstrained, the embedded model answers these greetings with `print(city * Good ...)`
    # even when python is not offered (session 17, held-out seed 123).
    from openglm.agent.tools import function_tool
    from openglm.io import load_model

    @function_tool
    def convert_units(value: float, unit_from: str, unit_to: str) -> dict:
        """Convert a value between units."""
        return {"value": value}

    model = load_model(EMBEDDED_DIR).for_inference()
    agent = Agent(LocalBackend(model, tok), [convert_units])
    for question in ("Good morning.", "Reserve a hotel room in Vienna."):
        calls = [e for e in agent.run(question) if isinstance(e, ToolCallEvent)]
        assert all(c.name == "convert_units" for c in calls), calls
