"""Weight-only quantization: the kernels compute with exactly the weight the stored form stands for."""

import copy

import pytest
import torch

from openglm.model import GLM, GLMConfig, QuantSpec, quantize_model
from openglm.model.quant import (
    KERNEL_MAX_ROWS,
    PACK_ROWS,
    QuantEmbedding,
    QuantLinear,
    canonical_shapes,
    cpu_int4_pack,
    dequantize,
    quantize_weight,
    random_quantized_glm,
    unpack_int4,
)

SPECS = [QuantSpec(8), QuantSpec(4, 32), QuantSpec(4, 64), QuantSpec(4, 128)]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
@pytest.mark.parametrize("bias", [False, True])
def test_quantized_matmul_equals_matmul_with_the_dequantized_weight(spec, bias):
    """The kernels take bf16 activations and give bf16 results: equal to the float matmul with the
    dequantized weight on the bf16-rounded input, to bf16 rounding of the result. Prompt-sized INT8
    inputs take the float matmul itself (exact)."""
    torch.manual_seed(0)
    w = torch.randn(192, 256) * 0.05
    b = torch.randn(192) if bias else None
    parts = quantize_weight(w, spec.bits, spec.group_size)
    layer = QuantLinear(256, 192, spec, parts, b)
    assert layer.kernel in ("int8", "int4-cpu")  # the real kernels, not the fallback
    for shape in [(1, 256), (1, 1, 256), (3, 2, 256), (3, 7, 256)]:
        x = torch.randn(shape)
        rows = x.numel() // 256
        exact = spec.bits == 8 and rows > KERNEL_MAX_ROWS
        seen = x if exact else x.bfloat16().float()
        want = seen @ dequantize(parts).T + (0 if b is None else b)
        tol = 1e-5 if exact else 8e-3 * want.abs().max().item()  # bf16: 8 bits of mantissa
        assert (layer(x) - want).abs().max() <= tol, shape


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_rounding_error_is_at_most_half_a_step(spec):
    torch.manual_seed(1)
    w = torch.randn(64, 256)
    parts = quantize_weight(w, spec.bits, spec.group_size)
    err = (dequantize(parts) - w).abs()
    if spec.bits == 8:
        assert (err <= parts["scales"][:, None] / 2 + 1e-6).all()
    else:
        step = parts["scales"].repeat_interleave(spec.group_size, dim=1)
        assert (err <= step / 2 + 1e-6).all()
        values = unpack_int4(parts["qweight"])
        assert values.max() <= 15 and values.shape == w.shape
    for key, (shape, dtype) in canonical_shapes(64, 256, spec).items():
        assert parts[key].shape == shape and parts[key].dtype == dtype


def test_a_shape_the_int4_kernel_refuses_falls_back_to_the_dequantized_weight():
    w = torch.randn(257, 64)  # 257 output rows: not a multiple of the CPU kernel's blocks
    spec = QuantSpec(4, 32)
    parts = quantize_weight(w, 4, 32)
    layer = QuantLinear(64, 257, spec, parts)
    x = torch.randn(2, 64)
    assert torch.allclose(layer(x), x @ dequantize(parts).T, atol=1e-5)


def test_the_cpu_int4_layout_made_in_blocks_of_rows_equals_the_layout_made_whole():
    q = quantize_weight(torch.randn(3 * PACK_ROWS + 96, 128), 4, 64)["qweight"]
    whole = torch.ops.aten._convert_weight_to_int4pack_for_cpu(unpack_int4(q).int(), 1)
    assert torch.equal(cpu_int4_pack(q), whole)


def test_bad_settings_and_shapes_name_what_is_wrong():
    with pytest.raises(ValueError, match="bits must be 8 or 4"):
        QuantSpec(bits=3)
    with pytest.raises(ValueError, match="group size must be one of"):
        QuantSpec(bits=4, group_size=48)
    with pytest.raises(ValueError, match="layers.0.mlp.down.weight: 96 input columns"):
        quantize_weight(torch.randn(8, 96), 4, 64, "layers.0.mlp.down.weight")
    parts = quantize_weight(torch.randn(8, 64), 8)
    with pytest.raises(ValueError, match="lm_head.weight: quantized tensor qweight must be torch.int8 \\[16, 64\\]"):
        QuantLinear(64, 16, QuantSpec(8), parts, name="lm_head.weight")
    with pytest.raises(ValueError, match="unknown quantization 'int3'"):
        QuantSpec.named("int3")


@pytest.fixture(scope="module")
def nano():
    torch.manual_seed(0)
    return GLM(GLMConfig.from_preset("nano")).eval()


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_quantized_model_stays_close_and_fast_paths_agree(nano, scheme):
    ids = torch.randint(0, 8000, (2, 24))
    q = quantize_model(copy.deepcopy(nano), QuantSpec.named(scheme))
    assert isinstance(q.embed, QuantEmbedding) and isinstance(q.lm_head, QuantLinear)
    assert not any(isinstance(m, torch.nn.Linear) for m in q.modules())
    with torch.no_grad():
        ref, got = nano(ids), q(ids)
        fast = q.for_inference()(ids)
    kl = torch.nn.functional.kl_div(got.log_softmax(-1), ref.log_softmax(-1), log_target=True, reduction="batchmean")
    assert kl < (0.01 if scheme == "int8" else 0.2), kl
    assert torch.equal(fast, got)  # for_inference leaves quantized layers as they are


def test_random_quantized_model_is_built_without_a_full_precision_copy():
    cfg = GLMConfig.from_preset("nano")
    model = random_quantized_glm(cfg, QuantSpec(4, 64))
    floats = sum(t.numel() for t in model.state_dict().values() if t.is_floating_point())
    assert floats < cfg.hidden_size * cfg.vocab_size / 4  # scales, norms and biases only
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([[1, 2, 3]]))).all()
