"""Checkpoint round trips through every layout, sharding, dtypes and bad input."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file

import openglm.io as io
from openglm.io import CheckpointError
from tests.conftest import make_hf

IDS = torch.randint(0, 250, (2, 19), generator=torch.Generator().manual_seed(0))


def hf_logits(model):
    with torch.no_grad():
        return model(IDS).logits


@pytest.fixture(params=["glm", "glm4"])
def hf_dir(request, tmp_path):
    model = make_hf(request.param, seed=3, vocab_size=251)
    model.save_pretrained(tmp_path / "hf")
    return model, tmp_path


def test_hf_round_trip_loads_back_in_transformers(hf_dir):
    from transformers import AutoModelForCausalLM

    model, tmp = hf_dir
    ours = io.load_model(tmp / "hf")
    io.save_model(ours, tmp / "out", layout="hf")
    back = AutoModelForCausalLM.from_pretrained(tmp / "out").eval()  # no custom code
    assert type(back) is type(model)
    assert torch.equal(hf_logits(back), hf_logits(model))


def test_chatglm_round_trip_gives_identical_logits(hf_dir):
    model, tmp = hf_dir
    if model.config.model_type == "glm4":
        with pytest.raises(ValueError, match="sandwich"):
            io.save_model(io.load_model(tmp / "hf"), tmp / "cg", layout="chatglm")
        return
    io.save_model(io.load_model(tmp / "hf"), tmp / "cg", layout="chatglm")
    cfg = json.loads((tmp / "cg" / "config.json").read_text())
    assert cfg["model_type"] == "chatglm" and cfg["multi_query_group_num"] == 2
    io.save_model(io.load_model(tmp / "cg"), tmp / "hf2", layout="hf")
    from transformers import AutoModelForCausalLM

    back = AutoModelForCausalLM.from_pretrained(tmp / "hf2").eval()
    assert torch.equal(hf_logits(back), hf_logits(model))


# The documented name mapping (glm4-protocol.md), written out here independently of openglm.
CHATGLM_NAMES = {
    "model.embed_tokens.weight": "transformer.embedding.word_embeddings.weight",
    "model.norm.weight": "transformer.encoder.final_layernorm.weight",
    "lm_head.weight": "transformer.output_layer.weight",
    "input_layernorm.weight": "input_layernorm.weight",
    "self_attn.o_proj.weight": "self_attention.dense.weight",
    "post_attention_layernorm.weight": "post_attention_layernorm.weight",
    "mlp.gate_up_proj.weight": "mlp.dense_h_to_4h.weight",
    "mlp.down_proj.weight": "mlp.dense_4h_to_h.weight",
}


def test_chatglm_checkpoint_from_documented_mapping_loads(tmp_path):
    model = make_hf("glm", seed=5, vocab_size=301, num_key_value_heads=1)
    c = model.config
    sd = model.state_dict()
    out = {}
    for name, t in sd.items():
        if name.startswith("model.layers."):
            i, rest = name.split(".")[2], ".".join(name.split(".")[3:])
            if rest.startswith("self_attn.") and rest.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
                continue
            out[f"transformer.encoder.layers.{i}.{CHATGLM_NAMES[rest]}"] = t.contiguous()
        else:
            out[CHATGLM_NAMES[name]] = t.contiguous()
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}.self_attn."
        for s in ("weight", "bias"):
            out[f"transformer.encoder.layers.{i}.self_attention.query_key_value.{s}"] = torch.cat(
                [sd[p + f"{x}_proj.{s}"] for x in "qkv"])
    out["transformer.rotary_pos_emb.inv_freq"] = torch.zeros(c.head_dim // 4)
    (tmp_path / "cg").mkdir()
    save_file(out, str(tmp_path / "cg" / "model.safetensors"))
    config = {"architectures": ["ChatGLMModel"], "model_type": "chatglm", "hidden_size": c.hidden_size,
              "num_layers": c.num_hidden_layers, "num_attention_heads": c.num_attention_heads,
              "kv_channels": c.head_dim, "multi_query_attention": True, "multi_query_group_num": 1,
              "ffn_hidden_size": c.intermediate_size, "padded_vocab_size": c.vocab_size,
              "seq_length": 256, "rope_ratio": 1, "layernorm_epsilon": c.rms_norm_eps,
              "add_qkv_bias": True, "add_bias_linear": False, "rmsnorm": True, "post_layer_norm": True,
              "apply_residual_connection_post_layernorm": False, "original_rope": True}
    (tmp_path / "cg" / "config.json").write_text(json.dumps(config))
    ours = io.load_model(tmp_path / "cg")
    with torch.no_grad():
        assert (ours(IDS) - model(IDS).logits).abs().max().item() <= 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_sharded_save_in_each_dtype(tmp_path, dtype):
    model = make_hf("glm", seed=1, vocab_size=251)
    model.save_pretrained(tmp_path / "hf")
    ours = io.load_model(tmp_path / "hf", dtype=dtype)
    io.save_model(ours, tmp_path / "sh", layout="hf", max_shard_bytes=20_000)
    index = json.loads((tmp_path / "sh" / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 2
    assert all(t.dtype == dtype for f in shards for t in load_file(tmp_path / "sh" / f).values())
    again = io.load_model(tmp_path / "sh")
    assert again.embed.weight.dtype == dtype
    for (n, a), (_, b) in zip(ours.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), n


@pytest.fixture
def sharded(tmp_path):
    ours = io.load_model(_save_hf(tmp_path))
    io.save_model(ours, tmp_path / "sh", max_shard_bytes=20_000)
    return tmp_path / "sh"


def _save_hf(tmp_path):
    make_hf("glm", seed=2, vocab_size=251).save_pretrained(tmp_path / "hf")
    return tmp_path / "hf"


def test_missing_shard_is_named(sharded):
    victim = sorted(sharded.glob("model-*.safetensors"))[1]
    victim.unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match=f"shard {victim.name} is missing"):
        io.load_model(sharded)


def test_truncated_file_is_named(sharded):
    victim = sorted(sharded.glob("model-*.safetensors"))[0]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match=victim.name):
        io.load_model(sharded)


def test_shape_mismatch_names_the_tensor(tmp_path):
    d = _save_hf(tmp_path)
    sd = load_file(d / "model.safetensors")
    sd["model.layers.1.mlp.down_proj.weight"] = torch.zeros(64, 100)
    save_file(sd, str(d / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"model\.layers\.1\.mlp\.down_proj\.weight has shape \[64, 100\]"):
        io.load_model(d)


def test_missing_tensor_is_named(tmp_path):
    d = _save_hf(tmp_path)
    sd = load_file(d / "model.safetensors")
    del sd["model.layers.0.self_attn.k_proj.bias"]
    save_file(sd, str(d / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"k_proj\.bias"):
        io.load_model(d)


def test_unknown_architecture_is_rejected(tmp_path):
    d = _save_hf(tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"], cfg["model_type"] = ["LlamaForCausalLM"], "llama"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unknown architecture.*LlamaForCausalLM"):
        io.load_model(d)


def test_loading_200mb_peaks_below_1_3x_its_size(tmp_path):
    """Measured in a fresh process: peak RSS growth while loading, over the file size."""
    from openglm.model import GLM, GLMConfig

    cfg = GLMConfig.from_depth(8, vocab_size=32768, num_layers=12)  # ~52M params = ~200 MB fp32
    with torch.no_grad():
        io.save_model(GLM(cfg), tmp_path / "big", layout="hf")
    size = sum(f.stat().st_size for f in (tmp_path / "big").glob("*.safetensors"))
    assert size > 180e6
    script = textwrap.dedent(f"""
        import resource, torch, openglm.io as io
        torch.ones(1000) @ torch.ones(1000)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        m = io.load_model({str(tmp_path / 'big')!r})
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((peak - base) * 1024)
    """)
    grown = int(subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                               text=True).stdout.split()[-1])
    assert grown < 1.3 * size, f"RSS grew {grown / 1e6:.0f} MB loading {size / 1e6:.0f} MB"
