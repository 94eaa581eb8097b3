"""Replies that go round in a loop are stopped by the decoder, and the agent ends its run there."""

import pytest
import torch

from openglm.agent import Agent, FinalEvent, Limits, LocalBackend
from openglm.agent.backends import looping
from openglm.model import GLM, GLMConfig
from openglm.tokenizer import default_tokenizer


@pytest.mark.parametrize("tokens, expected", [
    ([7] * 64, True),
    ([7] * 63, False),
    (list(range(10)) + [1, 2, 3] * 22, True),
    ([1, 2, 3] * 21, False),  # 63 tokens: under the span
    (list(range(40)) * 4, True),  # period 40, four times
    (list(range(40)) * 3 + list(range(20)), False),
    (list(range(100)) * 2, False),  # period 100: longer than any block looked for
    ([5, 6] * 40 + [9], False),  # the loop was left
])
def test_looping_detects_a_repeated_block_at_the_tail(tokens, expected):
    assert looping(tokens) is expected


def test_prose_and_code_are_not_taken_for_loops():
    tok = default_tokenizer()
    texts = ["for i in range(10):\n    print(i)\n" * 3, "The quick brown fox jumps over the lazy dog. " * 3,
             "| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n", "中华人民共和国成立于一九四九年。" * 2]
    for text in texts:
        assert not looping(tok.encode(text)), text


def test_a_model_stuck_on_one_token_is_stopped_and_the_run_ends():
    torch.manual_seed(0)
    model = GLM(GLMConfig.from_preset("nano")).eval()
    with torch.no_grad():
        model.final_norm.weight.zero_()  # every logit 0: greedy decoding repeats one token forever
    agent = Agent(LocalBackend(model, default_tokenizer()), limits=Limits(max_turn_tokens=1000))
    events = list(agent.run("say something"))
    final = events[-1]
    assert isinstance(final, FinalEvent) and final.reason == "repetition"
    assert final.tokens < 100
