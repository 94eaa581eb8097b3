"""Compiled decoding (inductor, max-autotune, frozen weights): same tokens as transformers and as eager."""

import gc
import weakref

import pytest
import torch

import openglm
from openglm.infer import PromptCache, Sampling, compile_decoding, compiled, generate_ids
from openglm.infer.compiled import capacity_for, compiled_decoder
from tests.conftest import make_hf

PROMPTS = [[5, 17, 423, 44, 88, 102, 7, 7, 300, 12], [201, 2, 150], [44, 45, 46, 47, 48, 49]]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A GLM-4-0414 layout (sandwich norms), so both block variants' code paths get compiled."""
    d = tmp_path_factory.mktemp("glm4")
    hf = make_hf("glm4", seed=3, vocab_size=512, max_position_embeddings=512)
    hf.save_pretrained(d)
    ours = openglm.load_model(d).for_inference()
    eager = {n: list(generate_ids(ours, PROMPTS[:n], 40)) for n in (1, 3)}
    compile_decoding(ours)
    return hf, ours, eager


def test_compiled_batch_equals_transformers_generate(pair):
    hf, ours, eager = pair
    T = max(map(len, PROMPTS))
    ids = torch.tensor([[0] * (T - len(p)) + p for p in PROMPTS])
    mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in PROMPTS])
    want = hf.generate(ids, attention_mask=mask, max_new_tokens=40, min_new_tokens=40, do_sample=False,
                       eos_token_id=None, pad_token_id=0)[:, T:]
    got = torch.tensor(list(generate_ids(ours, PROMPTS, 40, Sampling(), stop_ids=()))).T
    assert torch.equal(got, want)
    assert list(generate_ids(ours, PROMPTS, 40)) == eager[3]


def test_compiled_single_prompt_equals_eager(pair):
    _, ours, eager = pair
    assert compiled_decoder(ours) is not None
    assert list(generate_ids(ours, PROMPTS[:1], 40)) == eager[1]


def test_compiled_decoding_from_a_reused_prompt_cache_equals_eager(pair):
    _, ours, eager = pair
    pc = PromptCache()
    first = list(generate_ids(ours, PROMPTS[:1], 40, prompt_cache=pc))
    longer = PROMPTS[0] + [t for (t,) in first] + [9, 10]
    want = [t for (t,) in generate_ids(ours, [longer], 20)]  # compiled, from a fresh cache
    assert first == eager[1]
    assert [t for (t,) in generate_ids(ours, [longer], 20, prompt_cache=pc)] == want
    assert pc.reused == len(PROMPTS[0]) + 39 and pc.cache.max_len == 256


def test_compiled_step_logits_match_eager_forward(pair):
    _, ours, _ = pair
    decoder = compiled_decoder(ours)
    ids = torch.tensor([PROMPTS[0]])
    with torch.inference_mode():
        want = ours(ids)[:, -1]
        cache = decoder.new_cache(1, ids.shape[1])
        ours(ids[:, :-1], cache=cache)
        got = decoder.step(ids[:, -1:], torch.ones(1, ids.shape[1]), cache)
    assert cache.length == ids.shape[1] and cache.max_len == 256
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_capacity_buckets():
    assert [capacity_for(n) for n in (1, 256, 257, 1000, 4096, 4097)] == [256, 256, 512, 1024, 4096, 8192]


def test_compile_needs_eval_mode():
    model = openglm.GLM(openglm.GLMConfig.from_depth(1, vocab_size=64))
    with pytest.raises(ValueError, match="eval mode"):
        compile_decoding(model.train())
    assert compiled_decoder(model) is None


def test_two_models_of_one_shape_keep_their_own_weights():
    """Frozen weights are constants of the graph: a second model must not reuse the first one's."""
    cfg = openglm.GLMConfig.from_depth(1, vocab_size=256)
    models = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = openglm.GLM(cfg)
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 0.5)  # far from the init, whose untrained logits repeat the input
        models.append(model.for_inference())
    eager = [list(generate_ids(m, [[5, 6, 7, 8]], 12)) for m in models]
    assert eager[0] != eager[1]
    for m in models:
        compile_decoding(m)
    assert [list(generate_ids(m, [[5, 6, 7, 8]], 12)) for m in models] == eager


def test_a_compiled_model_can_be_freed():
    model = openglm.GLM(openglm.GLMConfig.from_depth(1, vocab_size=64)).eval()
    compile_decoding(model)
    list(generate_ids(model, [[1, 2, 3]], 3))
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


def test_guards_check_only_the_model_identity(monkeypatch):
    """Each step checks dynamo's guards; those on the model's modules and parameters (~10 a layer)
    are dropped but one, or a 12-layer model pays ~0.5 ms a token for them."""
    kept, dropped = [], []
    keep_guard = compiled._keep_guard

    def spy(entries):
        keep = keep_guard(entries)
        for e, k in zip(entries, keep):
            (kept if k else dropped).append(e.name)
        return keep

    monkeypatch.setattr(compiled, "_keep_guard", spy)
    model = openglm.GLM(openglm.GLMConfig.from_depth(1, vocab_size=64)).eval()
    compile_decoding(model)
    list(generate_ids(model, [[1, 2, 3]], 3))
    assert [n for n in kept if n.startswith(compiled._MODEL_GUARDS)] == [compiled._MODEL_IDENTITY]
    assert len(dropped) > 20
