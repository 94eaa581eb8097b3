"""The CPU inference shortcuts compute what the plain (training) path computes.

Under no_grad on CPU the model fuses SiLU, the SwiGLU product and the residual adds into oneDNN's
GEMM epilogues (for inputs of 128 rows or more), and fp32 prompts of 384-576 tokens take
halved_causal_attention; with autograd on,
every op runs separately through F.linear and one SDPA call. Same weights, same input: the two
must agree to float rounding.
"""

import pytest
import torch
import torch.nn.functional as F

import openglm.model.glm as glm
from openglm import GLM, GLMConfig


@pytest.mark.parametrize("length", [384, 451, 512, 576])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_halved_causal_attention_equals_one_causal_call(length, dtype, tol):
    g = torch.Generator().manual_seed(length)
    q = torch.randn(2, length, 6, 32, generator=g).transpose(1, 2).to(dtype)  # the model's strided views
    k, v = (torch.randn(2, length, 2, 32, generator=g).transpose(1, 2).to(dtype) for _ in range(2))
    with torch.no_grad():
        assert glm._halving_pays(q, k) == (dtype == torch.float32)  # bf16 keeps one call; still correct
        want = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        got = glm.halved_causal_attention(q, k, v)
    assert got.shape == want.shape and got.dtype == dtype
    assert (got.float() - want.float()).abs().max().item() < tol


def test_halving_is_for_inference_at_its_lengths_only():
    q, k = torch.zeros(1, 4, 512, 16), torch.zeros(1, 2, 512, 16)
    with torch.no_grad():
        assert glm._halving_pays(q, k)
        assert not glm._halving_pays(q[:, :, :200], k[:, :, :200])  # three small calls cost more
        assert not glm._halving_pays(q[:, :, -1:], k)  # queries after a cache
        assert not glm._halving_pays(q.bfloat16(), k.bfloat16())
    assert not glm._halving_pays(q, k)  # autograd on: training keeps SDPA


@pytest.mark.parametrize("sandwich", [False, True])
@pytest.mark.parametrize("packed", [False, True])
def test_fused_inference_matches_the_training_path(sandwich, packed):
    torch.manual_seed(0)
    cfg = GLMConfig.from_depth(2, vocab_size=300, sandwich_norm=sandwich)
    model = GLM(cfg).eval().pack_weights(packed)
    ids = torch.randint(0, 300, (2, 450))
    want = model(ids)  # autograd on: F.linear, separate SiLU/product/adds, one SDPA call
    assert want.requires_grad
    with torch.no_grad():
        got = model(ids)
        cached = model(ids, cache=model.new_cache(2, 460))
    assert (got - want).abs().max().item() < 1e-4
    assert torch.equal(cached, got)


@pytest.mark.skipif(torch.float32 not in glm._ONEDNN, reason="this PyTorch build has no oneDNN linear")
def test_fused_linear_epilogues():
    torch.manual_seed(0)
    lin = glm.Linear(24, 40, bias=True).eval()
    x, other = torch.randn(3, 50, 24), torch.randn(3, 50, 20)
    ref = F.linear(x, lin.weight, lin.bias)
    with torch.no_grad():
        assert lin.fuses(x) and not lin.fuses(x[:, :1])  # 150 rows fuse, a decoding step's 3 do not
        assert torch.allclose(lin.fused(x, rows=(0, 20), silu=True), F.silu(ref[..., :20]), atol=1e-6)
        assert torch.allclose(lin.fused(x, rows=(20, 40), times=other), ref[..., 20:] * other, atol=1e-6)
        assert torch.allclose(lin.fused(x, rows=(20, 40), plus=other), ref[..., 20:] + other, atol=1e-6)
        lin.packed = True  # the packed copy of the whole weight, following in-place updates; ranges read the plain one
        assert torch.allclose(lin.fused(x, plus=other.repeat(1, 1, 2)), ref + other.repeat(1, 1, 2), atol=1e-6)
        lin.weight.mul_(2)
        assert torch.allclose(lin.fused(x), 2 * ref - lin.bias, atol=1e-5)
        assert torch.allclose(lin.fused(x, rows=(20, 40)), 2 * ref[..., 20:] - lin.bias[20:], atol=1e-5)
    assert not lin.fuses(x)  # autograd on
