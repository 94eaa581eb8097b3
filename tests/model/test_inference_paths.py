"""The CPU inference modules (model/fast.py, swapped in by for_inference) compute what the reference
modules of model/glm.py compute.

The fast ones fuse SiLU, the SwiGLU product and the residual adds into oneDNN's GEMM epilogues
(inputs of 128 rows or more), call oneDNN on packed weights, and split fp32 prompts of 384-576
tokens into three attention calls. Same weights, same input: the two settings must agree to
float rounding, and pick the same greedy tokens.
"""

import copy

import pytest
import torch
import torch.nn.functional as F

from openglm import GLM, GLMConfig
from openglm.infer import Sampling, generate_ids
from openglm.model import cpu, fast
from openglm.model.glm import Attention, Block, Linear
from openglm.train.lora import LoRALinear, apply_lora

CONFIGS = {
    "plain": dict(num_heads=4, num_kv_heads=4),
    "sandwich": dict(num_heads=4, num_kv_heads=2, sandwich_norm=True),
    "gqa": dict(num_heads=4, num_kv_heads=1, tie_embeddings=True),
}


def _pair(name: str, pack: bool = True) -> tuple[GLM, GLM]:
    """(reference, fast) models with the same weights, far from the init (whose untrained logits
    only repeat the input, which would make the greedy-token comparison trivial)."""
    torch.manual_seed(0)
    cfg = GLMConfig(vocab_size=300, hidden_size=64, num_layers=2, head_dim=16, ffn_hidden_size=160,
                    max_seq_len=1024, **CONFIGS[name])
    ref = GLM(cfg).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return ref, copy.deepcopy(ref).for_inference(pack=pack)


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("length", [37, 200, 450])  # decoding-sized, fused, fused + halved attention
def test_fast_logits_equal_the_reference(name, length):
    ref, quick = _pair(name)
    ids = torch.randint(0, 300, (2, length), generator=torch.Generator().manual_seed(length))
    with torch.no_grad():
        want = ref(ids)
        got = quick(ids)
        last = quick(ids, logits_to_keep=1)  # the last layer computes the last position only
        cached = quick(ids, cache=quick.new_cache(2, length + 8))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    torch.testing.assert_close(last, want[:, -1:], rtol=0, atol=1e-4)
    assert torch.equal(cached, got)


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("pack", [False, True])
def test_fast_greedy_tokens_equal_the_reference(name, pack):
    ref, quick = _pair(name, pack)
    prompts = [list(range(3, 203)), [7, 8, 9, 10, 11]]  # one fused prefill; a left-padded batch
    for batch in (prompts[:1], prompts):
        want = list(generate_ids(ref, batch, 24, Sampling(), stop_ids=()))
        assert list(generate_ids(quick, batch, 24, Sampling(), stop_ids=())) == want
    assert len({t for (t, _) in want}) > 1  # not one repeated token


def test_a_model_that_decoded_on_packed_weights_can_be_copied():
    _, quick = _pair("plain")
    with torch.no_grad():
        want = quick(torch.tensor([[1, 2, 3]]))
    assert any("_pack" in vars(m) for m in quick.modules()) == (torch.float32 in cpu.ONEDNN_DTYPES)
    with torch.no_grad():
        assert torch.equal(copy.deepcopy(quick)(torch.tensor([[1, 2, 3]])), want)


def test_the_swap_keeps_parameters_and_can_be_undone():
    ref, quick = _pair("gqa")
    assert not fast.uses_fast_paths(ref) and fast.uses_fast_paths(quick)
    assert type(quick.layers[0]) is fast.FastBlock and type(quick.lm_head) is fast.FastLinear
    assert quick.lm_head.weight is quick.embed.weight  # a tied head stays tied
    assert quick.state_dict().keys() == ref.state_dict().keys()
    fast.use_reference_paths(quick)
    assert not fast.uses_fast_paths(quick)
    assert {type(m) for m in quick.modules()} == {type(m) for m in ref.modules()}
    assert not any(hasattr(m, "_pack") or "packed" in vars(m) for m in quick.modules())


def test_training_a_fast_model_takes_the_reference_ops():
    """Under autograd every fast module computes as its reference (oneDNN's calls have no backward)."""
    ref, quick = _pair("plain")
    ids = torch.randint(0, 300, (1, 200), generator=torch.Generator().manual_seed(1))
    for m in (ref, quick):
        m.train()
        m(ids, targets=ids).backward()
    torch.testing.assert_close(quick(ids), ref(ids), rtol=0, atol=1e-5)
    for a, b in zip(ref.parameters(), quick.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)  # the head + loss is fused in one


def test_lora_layers_keep_their_class_and_their_delta():
    ref, quick = _pair("plain")
    apply_lora(ref, ["attn.qkv", "mlp.down"], rank=4)
    with torch.no_grad():  # B starts at zero; make the adapters do something
        for layer in ref.modules():
            if isinstance(layer, LoRALinear):
                for b in layer.lora_B.values():
                    b.normal_(0, 0.1)
    apply_lora(quick, ["attn.qkv", "mlp.down"], rank=4)  # LoRA on a model already set for inference
    quick.load_state_dict(ref.state_dict())
    swapped = fast.use_fast_paths(copy.deepcopy(ref))  # and the swap after LoRA
    ids = torch.randint(0, 300, (2, 200), generator=torch.Generator().manual_seed(2))
    for m in (quick, swapped):
        assert type(m.layers[0].attn.qkv) is LoRALinear and type(m.layers[0].attn.proj) is fast.FastLinear
        with torch.no_grad():
            torch.testing.assert_close(m(ids), ref(ids), rtol=0, atol=1e-4)


def test_the_reference_modules_are_the_plain_ones():
    """glm.py's modules hold no inference switch: under no_grad they run the ops they train with."""
    ref, _ = _pair("plain")
    assert Linear is torch.nn.Linear
    assert {type(m) for m in ref.modules()} >= {Attention, Block, torch.nn.Linear}


@pytest.mark.parametrize("length", [384, 451, 512, 576])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_halved_causal_attention_equals_one_causal_call(length, dtype, tol):
    g = torch.Generator().manual_seed(length)
    q = torch.randn(2, length, 6, 32, generator=g).transpose(1, 2).to(dtype)  # the model's strided views
    k, v = (torch.randn(2, length, 2, 32, generator=g).transpose(1, 2).to(dtype) for _ in range(2))
    with torch.no_grad():
        assert fast.halving_pays(q, k) == (dtype == torch.float32)  # bf16 keeps one call; still correct
        want = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        got = fast.halved_causal_attention(q, k, v)
    assert got.shape == want.shape and got.dtype == dtype
    assert (got.float() - want.float()).abs().max().item() < tol


def test_halving_is_for_inference_at_its_lengths_only():
    q, k = torch.zeros(1, 4, 512, 16), torch.zeros(1, 2, 512, 16)
    with torch.no_grad():
        assert fast.halving_pays(q, k)
        assert not fast.halving_pays(q[:, :, :200], k[:, :, :200])  # three small calls cost more
        assert not fast.halving_pays(q[:, :, -1:], k)  # queries after a cache
        assert not fast.halving_pays(q.bfloat16(), k.bfloat16())
    assert not fast.halving_pays(q, k)  # autograd on


@pytest.mark.skipif(torch.float32 not in cpu.ONEDNN_DTYPES, reason="this PyTorch build has no oneDNN linear")
def test_fused_linear_epilogues():
    torch.manual_seed(0)
    lin = fast.use_fast_paths(Linear(24, 40, bias=True).eval(), pack=False)
    x, other = torch.randn(3, 50, 24), torch.randn(3, 50, 20)
    ref = F.linear(x, lin.weight, lin.bias)
    with torch.no_grad():
        assert fast.fuses(lin, x) and not fast.fuses(lin, x[:, :1])  # 150 rows fuse, a decoding step's 3 do not
        assert torch.allclose(lin.fused(x, rows=(0, 20), silu=True), F.silu(ref[..., :20]), atol=1e-6)
        assert torch.allclose(lin.fused(x, rows=(20, 40), times=other), ref[..., 20:] * other, atol=1e-6)
        assert torch.allclose(lin.fused(x, rows=(20, 40), plus=other), ref[..., 20:] + other, atol=1e-6)
        lin.packed = True  # the packed copy of the whole weight, following in-place updates; ranges read the plain one
        assert torch.allclose(lin.fused(x, plus=other.repeat(1, 1, 2)), ref + other.repeat(1, 1, 2), atol=1e-6)
        lin.weight.mul_(2)
        assert torch.allclose(lin.fused(x), 2 * ref - lin.bias, atol=1e-5)
        assert torch.allclose(lin.fused(x, rows=(20, 40)), 2 * ref[..., 20:] - lin.bias[20:], atol=1e-5)
    assert not fast.fuses(lin, x)  # autograd on
