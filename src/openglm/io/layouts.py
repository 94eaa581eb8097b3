"""Checkpoint layouts as data: a table of tensor names plus one fuse/split rule for QKV.

openglm's own names          transformers Glm/Glm4 (`hf`)            original ChatGLM (`chatglm`)
embed.weight                 model.embed_tokens.weight               transformer.embedding.word_embeddings.weight
layers.N.attn.qkv.*          model.layers.N.self_attn.{q,k,v}_proj.*  ...layers.N.self_attention.query_key_value.*
...                          (see the tables below)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model.config import GLMConfig


@dataclass(frozen=True)
class Layout:
    name: str
    prefix: str  # prepended to every per-layer name, with {i} for the layer index
    names: dict[str, str]  # openglm name -> layout name (per-layer names are relative)
    globals: dict[str, str]
    split_qkv: bool  # True: q/k/v are separate tensors; False: one fused query_key_value
    qkv: str  # name pattern of the QKV tensor(s); {p} is q/k/v when split
    dropped: tuple[str, ...] = ()  # layout tensors that are derived, not stored weights


HF = Layout(
    name="hf",
    prefix="model.layers.{i}.",
    names={
        "attn_norm.weight": "input_layernorm.weight",
        "attn.proj.weight": "self_attn.o_proj.weight",
        "mlp_norm.weight": "post_attention_layernorm.weight",
        "mlp.gate_up.weight": "mlp.gate_up_proj.weight",
        "mlp.down.weight": "mlp.down_proj.weight",
        "post_attn_norm.weight": "post_self_attn_layernorm.weight",
        "post_mlp_norm.weight": "post_mlp_layernorm.weight",
    },
    globals={"embed.weight": "model.embed_tokens.weight", "final_norm.weight": "model.norm.weight",
             "lm_head.weight": "lm_head.weight"},
    split_qkv=True,
    qkv="self_attn.{p}_proj",
)

CHATGLM = Layout(
    name="chatglm",
    prefix="transformer.encoder.layers.{i}.",
    names={
        "attn_norm.weight": "input_layernorm.weight",
        "attn.proj.weight": "self_attention.dense.weight",
        "mlp_norm.weight": "post_attention_layernorm.weight",
        "mlp.gate_up.weight": "mlp.dense_h_to_4h.weight",
        "mlp.down.weight": "mlp.dense_4h_to_h.weight",
    },
    globals={"embed.weight": "transformer.embedding.word_embeddings.weight",
             "final_norm.weight": "transformer.encoder.final_layernorm.weight",
             "lm_head.weight": "transformer.output_layer.weight"},
    split_qkv=False,
    qkv="self_attention.query_key_value",
    dropped=("transformer.rotary_pos_emb.inv_freq",),
)

LAYOUTS = {"hf": HF, "chatglm": CHATGLM}


def layout_for_kind(kind: str) -> Layout:
    """'glm'/'glm4' configs use the hf layout; 'chatglm' the original one."""
    return CHATGLM if kind == "chatglm" else HF


def check_layout(cfg: GLMConfig, layout: Layout) -> None:
    """Refuse a layout that cannot hold every weight of this config (nothing is dropped)."""
    if cfg.sandwich_norm and "post_attn_norm.weight" not in layout.names:
        raise ValueError(f"the {layout.name} layout cannot store GLM-4-0414 sandwich norms; use 'hf'")
    if layout is CHATGLM and cfg.rope_fraction != 0.5:
        raise ValueError("the chatglm layout always rotates half of each head (rope_fraction 0.5)")


def expected_tensors(cfg: GLMConfig, layout: Layout) -> dict[str, tuple[int, ...]]:
    """Every tensor name the layout stores for this config, with its shape."""
    check_layout(cfg, layout)
    H, Q, KV, F = cfg.hidden_size, cfg.q_size, cfg.kv_size, cfg.ffn_hidden_size
    shapes = {"embed.weight": (cfg.vocab_size, H), "final_norm.weight": (H,)}
    if not cfg.tie_embeddings:
        shapes["lm_head.weight"] = (cfg.vocab_size, H)
    out = {layout.globals[k]: v for k, v in shapes.items()}
    per_layer = {"attn_norm.weight": (H,), "attn.proj.weight": (H, Q), "mlp_norm.weight": (H,),
                 "mlp.gate_up.weight": (2 * F, H), "mlp.down.weight": (H, F)}
    if cfg.sandwich_norm:
        per_layer |= {"post_attn_norm.weight": (H,), "post_mlp_norm.weight": (H,)}
    qkv_rows = {"q": Q, "k": KV, "v": KV}
    for i in range(cfg.num_layers):
        pre = layout.prefix.format(i=i)
        out |= {pre + layout.names[k]: v for k, v in per_layer.items()}
        suffixes = ["weight", "bias"] if cfg.qkv_bias else ["weight"]
        for s in suffixes:
            if layout.split_qkv:
                for p, rows in qkv_rows.items():
                    out[f"{pre}{layout.qkv.format(p=p)}.{s}"] = (rows, H) if s == "weight" else (rows,)
            else:
                out[f"{pre}{layout.qkv}.{s}"] = (Q + 2 * KV, H) if s == "weight" else (Q + 2 * KV,)
    return out


def to_openglm(get, cfg: GLMConfig, layout: Layout, put=None) -> dict[str, torch.Tensor]:
    """Build openglm's state dict, reading each layout tensor with `get(name)` exactly once. With
    `put(name, tensor)`, each openglm tensor goes there as soon as it is made (returns {})."""
    sd: dict[str, torch.Tensor] = {}
    put = put or sd.__setitem__
    for k in ("embed.weight", "final_norm.weight"):
        put(k, get(layout.globals[k]))
    if not cfg.tie_embeddings:
        put("lm_head.weight", get(layout.globals["lm_head.weight"]))
    for i in range(cfg.num_layers):
        pre = layout.prefix.format(i=i)
        for ours, theirs in layout.names.items():
            if ours.startswith("post_") and not cfg.sandwich_norm:
                continue
            put(f"layers.{i}.{ours}", get(pre + theirs))
        for s in (["weight", "bias"] if cfg.qkv_bias else ["weight"]):
            if layout.split_qkv:
                put(f"layers.{i}.attn.qkv.{s}", torch.cat([get(f"{pre}{layout.qkv.format(p=p)}.{s}") for p in "qkv"]))
            else:
                put(f"layers.{i}.attn.qkv.{s}", get(f"{pre}{layout.qkv}.{s}"))
    return sd


def from_openglm(sd: dict[str, torch.Tensor], cfg: GLMConfig, layout: Layout):
    """Yield (layout name, tensor) for an openglm state dict; q/k/v are row views, not copies."""
    for ours in ("embed.weight", "final_norm.weight", "lm_head.weight"):
        if ours == "lm_head.weight" and cfg.tie_embeddings:
            continue
        yield layout.globals[ours], sd[ours]
    for i in range(cfg.num_layers):
        pre = layout.prefix.format(i=i)
        for ours, theirs in layout.names.items():
            if ours.startswith("post_") and not cfg.sandwich_norm:
                continue
            yield pre + theirs, sd[f"layers.{i}.{ours}"]
        for s in (["weight", "bias"] if cfg.qkv_bias else ["weight"]):
            fused = sd[f"layers.{i}.attn.qkv.{s}"]
            if layout.split_qkv:
                for p, part in zip("qkv", fused.split([cfg.q_size, cfg.kv_size, cfg.kv_size])):
                    yield f"{pre}{layout.qkv.format(p=p)}.{s}", part
            else:
                yield f"{pre}{layout.qkv}.{s}", fused
    if layout is CHATGLM:
        # The original remote code keeps RoPE's inverse frequencies (base 10000; rope_ratio is
        # applied at run time) as a stored buffer.
        dim = cfg.rotary_dim
        yield layout.dropped[0], 1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))


def hf_config(cfg: GLMConfig, dtype: torch.dtype) -> dict:
    """config.json that transformers' AutoModelForCausalLM loads with no custom code."""
    glm4 = cfg.sandwich_norm
    return {
        "architectures": ["Glm4ForCausalLM" if glm4 else "GlmForCausalLM"],
        "model_type": "glm4" if glm4 else "glm",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "intermediate_size": cfg.ffn_hidden_size,
        "max_position_embeddings": cfg.max_seq_len,
        "rope_theta": cfg.rope_theta,
        "partial_rotary_factor": cfg.rope_fraction,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta,
                            "partial_rotary_factor": cfg.rope_fraction},
        "rms_norm_eps": cfg.norm_eps,
        "attention_bias": cfg.qkv_bias,
        "attention_dropout": 0.0,
        "hidden_act": "silu",
        "initializer_range": cfg.init_std,
        "tie_word_embeddings": cfg.tie_embeddings,
        "pad_token_id": cfg.pad_token_id,
        "eos_token_id": list(cfg.eos_token_ids),
        "torch_dtype": str(dtype).removeprefix("torch."),
        "use_cache": True,
    }


def chatglm_config(cfg: GLMConfig, dtype: torch.dtype) -> dict:
    """config.json in the original ChatGLM format (use with the checkpoint's remote code)."""
    return {
        "architectures": ["ChatGLMModel"],
        "model_type": "chatglm",
        "add_bias_linear": False,
        "add_qkv_bias": cfg.qkv_bias,
        "apply_query_key_layer_scaling": True,
        "apply_residual_connection_post_layernorm": False,
        "attention_dropout": 0.0,
        "attention_softmax_in_fp32": True,
        "bias_dropout_fusion": True,
        "ffn_hidden_size": cfg.ffn_hidden_size,
        "fp32_residual_connection": False,
        "hidden_dropout": 0.0,
        "hidden_size": cfg.hidden_size,
        "kv_channels": cfg.head_dim,
        "layernorm_epsilon": cfg.norm_eps,
        "multi_query_attention": cfg.num_kv_heads != cfg.num_heads,
        "multi_query_group_num": cfg.num_kv_heads,
        "num_attention_heads": cfg.num_heads,
        "num_layers": cfg.num_layers,
        "original_rope": True,
        "padded_vocab_size": cfg.vocab_size,
        "post_layer_norm": True,
        "rmsnorm": True,
        "rope_ratio": cfg.rope_ratio,
        "seq_length": cfg.max_seq_len,
        "tie_word_embeddings": cfg.tie_embeddings,
        "torch_dtype": str(dtype).removeprefix("torch."),
        "pad_token_id": cfg.pad_token_id,
        "eos_token_id": list(cfg.eos_token_ids),
    }
