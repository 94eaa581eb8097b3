"""GLMConfig: presets, the depth dial, and reading real config.json files."""

import json

import pytest
import torch

from openglm.model import GLM, GLMConfig, count_parameters

# glm-4-9b-chat's config.json (original ChatGLM fields), as published.
CHATGLM_9B = {
    "architectures": ["ChatGLMModel"], "model_type": "chatglm", "add_bias_linear": False, "add_qkv_bias": True,
    "apply_residual_connection_post_layernorm": False, "ffn_hidden_size": 13696, "hidden_size": 4096,
    "kv_channels": 128, "layernorm_epsilon": 1.5625e-07, "multi_query_attention": True,
    "multi_query_group_num": 2, "num_attention_heads": 32, "num_layers": 40, "padded_vocab_size": 151552,
    "post_layer_norm": True, "rmsnorm": True, "rope_ratio": 500, "seq_length": 131072,
    "eos_token_id": [151329, 151336, 151338], "pad_token_id": 151329, "tie_word_embeddings": False,
}
# glm-4-9b-chat-hf (transformers GlmConfig fields).
HF_9B = {
    "architectures": ["GlmForCausalLM"], "model_type": "glm", "attention_bias": True, "head_dim": 128,
    "hidden_size": 4096, "intermediate_size": 13696, "max_position_embeddings": 131072,
    "num_attention_heads": 32, "num_hidden_layers": 40, "num_key_value_heads": 2, "partial_rotary_factor": 0.5,
    "rms_norm_eps": 1.5625e-07, "rope_theta": 5000000.0, "vocab_size": 151552, "tie_word_embeddings": False,
    "eos_token_id": [151329, 151336, 151338], "pad_token_id": 151329,
}
SHAPE_FIELDS = ["vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                "ffn_hidden_size", "max_seq_len", "rope_theta", "rope_fraction", "norm_eps", "qkv_bias",
                "tie_embeddings", "sandwich_norm", "eos_token_ids", "pad_token_id"]


def shape(cfg):
    return {k: getattr(cfg, k) for k in SHAPE_FIELDS}


def test_glm4_9b_chat_has_the_published_parameter_count():
    with torch.device("meta"):
        model = GLM(GLMConfig.from_preset("glm-4-9b-chat"))
    assert count_parameters(model) == 9_399_951_360
    assert all(p.device.type == "meta" for p in model.parameters())


@pytest.mark.parametrize("raw", [CHATGLM_9B, HF_9B], ids=["chatglm", "hf"])
def test_both_config_formats_read_as_the_preset(raw, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(raw))
    assert shape(GLMConfig.from_pretrained(tmp_path)) == shape(GLMConfig.from_preset("glm-4-9b-chat"))


def test_glm4_0414_config_turns_on_sandwich_norms(tmp_path):
    raw = dict(HF_9B, architectures=["Glm4ForCausalLM"], model_type="glm4", rope_theta=10000.0,
               max_position_embeddings=32768, rms_norm_eps=1e-5)
    (tmp_path / "config.json").write_text(json.dumps(raw))
    assert shape(GLMConfig.from_pretrained(tmp_path)) == shape(GLMConfig.from_preset("glm-4-9b-0414"))


def test_transformers_v5_rope_parameters_are_read(tmp_path):
    raw = {k: v for k, v in HF_9B.items() if k not in ("rope_theta", "partial_rotary_factor")}
    raw["rope_parameters"] = {"rope_type": "default", "rope_theta": 5e6, "partial_rotary_factor": 0.5}
    (tmp_path / "config.json").write_text(json.dumps(raw))
    assert GLMConfig.from_pretrained(tmp_path).rope_ratio == 500


def test_post_norm_chatglm_variants_are_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(dict(CHATGLM_9B, apply_residual_connection_post_layernorm=True)))
    with pytest.raises(ValueError, match="apply_residual_connection_post_layernorm"):
        GLMConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize("depth", [1, 2, 4, 8, 12, 20])
def test_depth_dial_derives_every_size(depth):
    cfg = GLMConfig.from_depth(depth)
    assert cfg.hidden_size == 64 * depth and cfg.num_layers == depth
    assert cfg.num_heads * cfg.head_dim == cfg.hidden_size
    assert cfg.num_heads % cfg.num_kv_heads == 0
    assert cfg.ffn_hidden_size % 64 == 0
    assert 10 / 3 * cfg.hidden_size <= cfg.ffn_hidden_size < 10 / 3 * cfg.hidden_size + 64


def test_nano_and_micro_come_from_the_dial():
    assert shape(GLMConfig.from_preset("nano")) == shape(GLMConfig.from_depth(4))
    assert shape(GLMConfig.from_preset("micro")) == shape(GLMConfig.from_depth(8))


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="num_kv_heads=3 must divide num_heads=4"):
        GLMConfig.from_depth(4, num_kv_heads=3)
    with pytest.raises(ValueError, match="unknown preset 'glm-5'"):
        GLMConfig.from_preset("glm-5")
