"""The shipped nano agent model: it loads, and on a fixed held-out set it really uses tools."""

import pytest

from openglm.speedrun import EMBEDDED_DIR

pytestmark = pytest.mark.slow
HELDOUT_TASKS = 24


@pytest.fixture(scope="module")
def summary():
    from openglm.agent import LocalBackend
    from openglm.data.synth import generate_tasks
    from openglm.eval.agent import evaluate
    from openglm.io import load_model
    from openglm.tokenizer import load_tokenizer

    model = load_model(EMBEDDED_DIR).eval().pack_weights()
    tasks = generate_tasks(HELDOUT_TASKS, seed=123, split="heldout")
    return evaluate(LocalBackend(model, load_tokenizer(EMBEDDED_DIR)), tasks, with_baseline=False, progress=False)


def test_the_embedded_model_ships_small():
    size = sum(f.stat().st_size for f in EMBEDDED_DIR.glob("*.safetensors"))
    assert 0 < size <= 25e6


def test_it_makes_valid_tool_calls(summary):
    assert summary["overall"]["valid_call_rate"] >= 0.9


def test_it_answers_correctly_with_tools(summary):
    assert summary["overall"]["answer_with_tools"] >= 0.7


def test_chat_and_agent_use_it_by_default():
    from openglm.cli import load_for_inference

    model, tok = load_for_inference(None)
    assert model.config.vocab_size == tok.vocab_size < 151552
