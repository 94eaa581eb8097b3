"""Half-precision weights on CPUs with and without native bf16 math (AVX-512 vs AVX2 only).

On an AVX2 CPU oneDNN refuses bf16 linear layers, so a bf16 model must neither call it nor pack
for it, and inference entry points compute in fp32 there. The "AVX2" case is simulated on an
AVX-512 machine by narrowing the set of dtypes oneDNN is known to accept.
"""

import pytest
import torch

from openglm import GLM, GLMConfig
from openglm.infer import Sampling, generate_ids
from openglm.model import cpu, fast
from openglm.train.distributed import pick_precision


@pytest.fixture(params=["this cpu", "avx2 only"])
def capability(request, monkeypatch):
    if request.param == "avx2 only":
        monkeypatch.setattr(cpu, "ONEDNN_DTYPES", cpu.ONEDNN_DTYPES & {torch.float32})
    return request.param


def _bf16_model() -> GLM:
    torch.manual_seed(0)
    return GLM(GLMConfig.from_depth(2, vocab_size=300)).to(torch.bfloat16)


def test_fp32_always_counts_as_native():
    assert cpu.cpu_computes_natively(torch.float32)


def test_for_inference_computes_in_fp32_only_where_bf16_is_not_native(capability):
    model = _bf16_model().for_inference()
    native = cpu.cpu_computes_natively(torch.bfloat16)
    assert model.embed.weight.dtype == (torch.bfloat16 if native else torch.float32)
    assert not model.training
    packed = {m.packed for m in model.modules() if isinstance(m, fast.FastLinear)}
    assert packed == {model.embed.weight.dtype in cpu.ONEDNN_DTYPES}
    tokens = [t[0] for t in generate_ids(model, [[5, 6, 7, 8]], 6, Sampling(), stop_ids=())]
    assert len(tokens) == 6 and all(0 <= t < 300 for t in tokens)


def test_a_bf16_model_runs_inference_without_for_inference(capability):
    model = _bf16_model().eval().pack_weights()
    with torch.inference_mode():
        logits = model(torch.tensor([[1, 2, 3]]))
    assert logits.shape == (1, 3, 300) and torch.isfinite(logits).all()


def test_for_inference_upcast_matches_an_fp32_copy(monkeypatch):
    monkeypatch.setattr(cpu, "ONEDNN_DTYPES", cpu.ONEDNN_DTYPES & {torch.float32})
    bf16 = _bf16_model()
    fp32 = GLM(bf16.config)
    fp32.load_state_dict({k: v.float() for k, v in bf16.state_dict().items()})
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    with torch.inference_mode():
        assert torch.equal(bf16.for_inference()(ids), fp32.for_inference()(ids))  # same kernels


def test_auto_precision_is_bf16_only_where_native(capability):
    device = torch.device("cpu")
    assert pick_precision("auto", device) == ("bf16" if cpu.cpu_computes_natively(torch.bfloat16) else "fp32")
    assert pick_precision("fp32", device) == "fp32"


def test_explicit_bf16_on_a_cpu_without_it_is_kept_with_a_warning(monkeypatch):
    monkeypatch.setattr(cpu, "ONEDNN_DTYPES", cpu.ONEDNN_DTYPES & {torch.float32})
    with pytest.warns(UserWarning, match="precision=bf16 on a CPU without native bf16"):
        assert pick_precision("bf16", torch.device("cpu")) == "bf16"
