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
    are dropped but its identity, or a 12-layer model pays ~0.5 ms a token for them. The filter
    leans on torch's own nn-module filter and on guard values: this fails if either changes."""
    seen = []
    keep_guards = compiled.CompiledDecoder.keep_guards

    def spy(self, entries):
        keep = keep_guards(self, entries)
        seen.extend(zip(entries, keep))
        return keep

    monkeypatch.setattr(compiled.CompiledDecoder, "keep_guards", spy)
    model = openglm.GLM(openglm.GLMConfig.from_depth(1, vocab_size=64)).for_inference()
    compile_decoding(model)
    list(generate_ids(model, [[1, 2, 3]], 3))
    kept = [e for e, k in seen if k]
    on_model = [e for e in kept if e.has_value and isinstance(e.value, (torch.nn.Module, torch.nn.Parameter))]
    assert {id(e.value) for e in on_model} == {id(model), id(model.final_norm.weight)}, [e.name for e in on_model]
    assert len(on_model) < 8, [e.name for e in on_model]
    assert sum(not k for _, k in seen) > 20, [e.name for e, _ in seen]


def test_the_step_runs_the_models_own_forward(monkeypatch):
    """No second copy of the forward: the compiled step traces GLM.forward, with a real KVCache."""
    calls = []
    forward = openglm.GLM.forward

    def spy(self, *args, **kw):
        calls.append(type(kw.get("cache")))
        return forward(self, *args, **kw)

    monkeypatch.setattr(openglm.GLM, "forward", spy)
    model = openglm.GLM(openglm.GLMConfig.from_depth(1, vocab_size=64)).eval()
    compile_decoding(model)
    assert model.compiled_decoder is compiled_decoder(model)
    list(generate_ids(model, [[1, 2, 3]], 3))
    assert compiled.SlotKVCache in calls and issubclass(compiled.SlotKVCache, openglm.model.KVCache)


def test_each_model_compiles_against_its_own_recompile_limit():
    """Decoders share no compiled code: dynamo's per-code recompile limit (8 by default) must not stop the
    next model in a long-lived process (a test run, an eval over checkpoints)."""
    import torch._dynamo

    from openglm.infer import Sampling, compile_decoding, generate_ids
    from openglm.model import GLM, GLMConfig

    small = dict(num_layers=1, hidden_size=64, num_heads=2, num_kv_heads=1, head_dim=32, ffn_hidden_size=192)
    with torch._dynamo.config.patch(recompile_limit=2), torch.no_grad():
        for seed in range(3):
            torch.manual_seed(seed)
            model = compile_decoding(GLM(GLMConfig.from_preset("nano", **small)).eval())
            assert len(list(generate_ids(model, [[1, 2, 3]], 3, Sampling()))) == 3
