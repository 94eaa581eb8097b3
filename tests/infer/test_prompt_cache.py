"""PromptCache: a prompt that extends the last generation's tokens computes only its new part,
and yields the same tokens as a generation from scratch."""

import pytest
import torch

from openglm.infer import PromptCache, Sampling, generate_ids
from openglm.model import GLM, GLMConfig


def _model(seed: int) -> GLM:
    torch.manual_seed(seed)
    cfg = GLMConfig(vocab_size=512, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
                    ffn_hidden_size=128, max_seq_len=1024)
    return GLM(cfg).eval()


@pytest.fixture(scope="module")
def model():
    return _model(0)


def _gen(model, prompt, n, cache=None) -> list[int]:
    return [t for (t,) in generate_ids(model, [prompt], n, Sampling(), stop_ids=(), prompt_cache=cache)]


def _prompt(seed: int, n: int) -> list[int]:
    return torch.randint(3, 512, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_a_growing_conversation_computes_only_its_new_tokens(model):
    pc = PromptCache()
    p1 = _prompt(1, 40)
    out1 = _gen(model, p1, 10, pc)
    assert out1 == _gen(model, p1, 10)
    assert (pc.reused, pc.prefilled) == (0, 40)
    # the cache holds the prompt and every token fed back (all replies but the last)
    assert pc.ids == p1 + out1[:-1] and pc.cache.length == len(pc.ids)
    p2 = p1 + out1 + _prompt(2, 7)  # the reply, then the next message
    out2 = _gen(model, p2, 10, pc)
    assert out2 == _gen(model, p2, 10)
    assert (pc.reused, pc.prefilled) == (49, 40 + len(p2) - 49)


def test_a_different_prompt_reuses_only_the_shared_prefix(model):
    pc = PromptCache()
    p1 = _prompt(3, 30)
    _gen(model, p1, 5, pc)
    p2 = p1[:12] + _prompt(4, 20)  # same system prompt, another conversation
    assert _gen(model, p2, 8, pc) == _gen(model, p2, 8)
    assert pc.reused == 12
    assert _gen(model, p2, 8, pc) == _gen(model, p2, 8)  # the same prompt again: all but its last token
    assert pc.reused == 12 + len(p2) - 1


def test_a_longer_generation_moves_the_prefix_to_a_bigger_cache(model):
    pc = PromptCache()
    p1 = _prompt(5, 100)
    _gen(model, p1, 4, pc)
    small = pc.cache
    p2 = p1 + _prompt(6, 5)
    assert _gen(model, p2, 300, pc) == _gen(model, p2, 300)  # needs more than the 256-slot bucket
    assert pc.cache is not small and pc.cache.max_len == 512
    assert pc.reused == 100


def test_another_model_does_not_use_the_cached_keys(model):
    pc = PromptCache()
    p = _prompt(7, 25)
    _gen(model, p, 4, pc)
    other = _model(1)
    assert _gen(other, p, 6, pc) == _gen(other, p, 6)
    assert pc.reused == 0


def test_a_prompt_cache_serves_one_prompt(model):
    with pytest.raises(ValueError, match="one prompt"):
        list(generate_ids(model, [[5, 6], [7, 8]], 2, prompt_cache=PromptCache()))


def test_a_chat_turn_reuses_the_history():
    from openglm import generate
    from openglm.tokenizer import default_tokenizer

    tok = default_tokenizer()
    torch.manual_seed(2)
    m = GLM(GLMConfig(vocab_size=tok.vocab_size, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                      head_dim=16, ffn_hidden_size=64, max_seq_len=512)).eval()
    pc = PromptCache()
    history = [{"role": "user", "content": "你好，今天天气怎么样？"}]
    reply = "".join(generate(m, tok, history, 12, stream=True, prompt_cache=pc))
    history += [{"role": "assistant", "content": reply}, {"role": "user", "content": "谢谢"}]
    assert generate(m, tok, history, 12, prompt_cache=pc) == generate(m, tok, history, 12)
    first_turn = len(tok.encode_chat(history[:1], add_generation_prompt=True))
    assert pc.reused >= first_turn


def test_a_model_cast_to_another_dtype_starts_a_fresh_cache():
    m = _model(3)
    pc = PromptCache()
    p = _prompt(8, 20)
    _gen(m, p, 4, pc)
    m.to(torch.float64)
    assert _gen(m, p, 4, pc) == _gen(m, p, 4)
    assert pc.reused == 0 and pc.cache.k[0].dtype == torch.float64
