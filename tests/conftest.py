"""Shared fixtures: tiny random transformers GLM models saved in their real formats."""

import pytest
import torch

torch.set_num_threads(2)


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Fill every parameter (norm gains and biases included) with random values, so a
    mapping mistake anywhere shows up in the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model


def make_hf(variant: str, seed: int = 0, **kw):
    """A random transformers GlmForCausalLM ('glm') or Glm4ForCausalLM ('glm4'), eval mode, fp32."""
    from transformers import Glm4Config, Glm4ForCausalLM, GlmConfig, GlmForCausalLM

    base = dict(vocab_size=257, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
                rms_norm_eps=1e-5, attention_bias=True, pad_token_id=0, eos_token_id=[1],
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5})
    base.update(kw)
    cls_cfg, cls = (Glm4Config, Glm4ForCausalLM) if variant == "glm4" else (GlmConfig, GlmForCausalLM)
    torch.manual_seed(seed)
    model = cls(cls_cfg(**base)).eval()
    return randomize(model, seed)


@pytest.fixture
def hf_factory():
    return make_hf
