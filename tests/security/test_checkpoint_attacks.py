"""Checkpoints are untrusted input: each hostile config, index or shard is one CheckpointError
naming the field, file or tensor, raised fast and before anything is built."""

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from openglm.io import CheckpointError, load_model, save_model
from openglm.model import GLM, GLMConfig

DELETE = object()
CFG = dict(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
           ffn_hidden_size=64, max_seq_len=128, rope_theta=10000.0, norm_eps=1e-5, pad_token_id=0,
           eos_token_ids=[1], name="tiny")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GLM(GLMConfig(**CFG))


def write(model, d, layout="hf", **kw):
    save_model(model, d, layout=layout, **kw)
    return d


@pytest.fixture
def hf(model, tmp_path):
    return write(model, tmp_path / "hf")


@pytest.fixture
def sharded(model, tmp_path):
    d = write(model, tmp_path / "sharded", max_shard_bytes=4_000)
    assert (d / "model.safetensors.index.json").exists()
    return d


def edit_config(d, **changes):
    raw = json.loads((d / "config.json").read_text())
    for k, v in changes.items():
        if v is DELETE:
            raw.pop(k, None)
        else:
            raw[k] = v
    (d / "config.json").write_text(json.dumps(raw))  # NaN/Infinity are written as JSON extensions


def edit_index(d, fn):
    index = json.loads((d / "model.safetensors.index.json").read_text())
    fn(index["weight_map"])
    (d / "model.safetensors.index.json").write_text(json.dumps(index))


def rewrite_tensor(d, name, fn):
    """Replace tensor `name` in whichever shard holds it by fn(tensor)."""
    for f in sorted(d.glob("*.safetensors")):
        sd = load_file(f)
        if name in sd:
            sd[name] = fn(sd[name])
            save_file(sd, str(f))
            return f
    raise KeyError(name)


def refused(d, *needles, **kw) -> str:
    with pytest.raises(CheckpointError) as e:
        load_model(d, **kw)
    msg = str(e.value)
    for n in needles:
        assert n in msg, msg
    assert "\n" not in msg
    return msg


def test_a_clean_checkpoint_loads(model, hf, sharded):
    for d in (hf, sharded):
        assert torch.equal(load_model(d).embed.weight, model.embed.weight)


# ---- config.json fields --------------------------------------------------------------------------
HF_ATTACKS = [
    ("num_hidden_layers", 1e12), ("num_hidden_layers", 10**12), ("num_hidden_layers", 0),
    ("num_hidden_layers", 2.0), ("num_hidden_layers", True), ("num_hidden_layers", "2"),
    ("num_attention_heads", 0), ("num_attention_heads", "abc"),
    ("num_key_value_heads", 0), ("num_key_value_heads", -2), ("num_key_value_heads", "abc"),
    ("hidden_size", "abc"), ("hidden_size", 0), ("hidden_size", [32]),
    ("vocab_size", 0), ("vocab_size", 10**9), ("vocab_size", "abc"),
    ("intermediate_size", 0), ("intermediate_size", 64.5),
    ("head_dim", 0), ("head_dim", 7), ("head_dim", 10**6),
    ("rms_norm_eps", -1), ("rms_norm_eps", 0), ("rms_norm_eps", float("nan")), ("rms_norm_eps", 5.0),
    ("rms_norm_eps", "1e-5"),
    ("rope_theta", 0), ("rope_theta", -10000.0), ("rope_theta", float("inf")), ("rope_theta", "abc"),
    ("partial_rotary_factor", 0), ("partial_rotary_factor", 1.5), ("partial_rotary_factor", 0.01),
    ("max_position_embeddings", 0), ("max_position_embeddings", 10**12),
    ("attention_bias", "yes"), ("tie_word_embeddings", 1),
    ("pad_token_id", -1), ("eos_token_id", "x"), ("eos_token_id", []), ("eos_token_id", [1, -5]),
    ("architectures", 5), ("model_type", 7), ("_name_or_path", 3),
]


@pytest.mark.timeout(10)
@pytest.mark.parametrize(("key", "value"), HF_ATTACKS, ids=[f"{k}={v!r}" for k, v in HF_ATTACKS])
def test_bad_hf_config_field_is_named(hf, key, value):
    # the v5 rope_parameters block would shadow the flat keys under test
    edit_config(hf, rope_parameters=DELETE, **{key: value})
    start = time.perf_counter()
    refused(hf, "config.json", key)
    assert time.perf_counter() - start < 1.0


def test_trillion_layers_fail_in_well_under_a_second(hf):
    edit_config(hf, num_hidden_layers=1e12)
    start = time.perf_counter()
    msg = refused(hf, "config.json: num_hidden_layers must be an integer")
    assert time.perf_counter() - start < 0.5, msg


def test_kv_heads_that_do_not_divide_the_heads(hf):
    edit_config(hf, num_key_value_heads=3)
    refused(hf, "num_key_value_heads=3 must divide num_attention_heads=4")


@pytest.mark.parametrize(("key", "value"), [("rope_parameters", [1]), ("rope_parameters", {"rope_theta": 0}),
                                            ("rope_parameters", {"partial_rotary_factor": "half"})])
def test_bad_rope_parameters_are_named(hf, key, value):
    edit_config(hf, **{key: value})
    refused(hf, "config.json", "rope_parameters")


@pytest.mark.parametrize("key", ["hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
                                 "intermediate_size"])
def test_missing_required_field_is_named(hf, key):
    edit_config(hf, **{key: DELETE})
    refused(hf, "config.json", f"{key} is missing")


def test_head_dim_derived_from_a_too_narrow_hidden_size(hf):
    edit_config(hf, head_dim=None, hidden_size=3)
    refused(hf, "config.json", "head_dim (hidden_size // num_attention_heads)")


CHATGLM_ATTACKS = [
    ("num_layers", 1e12), ("num_layers", "abc"), ("num_attention_heads", 0),
    ("multi_query_group_num", 0), ("multi_query_group_num", 3), ("multi_query_attention", "yes"),
    ("kv_channels", 0), ("kv_channels", 9), ("padded_vocab_size", "abc"), ("padded_vocab_size", -1),
    ("layernorm_epsilon", -1), ("layernorm_epsilon", float("nan")), ("rope_ratio", 0), ("rope_ratio", "abc"),
    ("rope_ratio", 1e300), ("seq_length", 0), ("ffn_hidden_size", 0), ("add_qkv_bias", "true"),
]


@pytest.mark.timeout(10)
@pytest.mark.parametrize(("key", "value"), CHATGLM_ATTACKS, ids=[f"{k}={v!r}" for k, v in CHATGLM_ATTACKS])
def test_bad_chatglm_config_field_is_named(model, tmp_path, key, value):
    d = write(model, tmp_path / "cg", layout="chatglm")
    edit_config(d, **{key: value})
    refused(d, "config.json", key)


def test_openglm_config_form_is_checked_too(hf):
    (hf / "config.json").write_text(json.dumps({"openglm": dict(CFG, num_layers=10**12)}))
    refused(hf, "config.json", "openglm.num_layers")
    (hf / "config.json").write_text(json.dumps({"openglm": dict(CFG, evil=1)}))
    refused(hf, "config.json", "unknown fields ['evil']")
    (hf / "config.json").write_text(json.dumps({"openglm": CFG, "layout": ["hf"]}))
    refused(hf, "config.json", "layout")


# ---- config.json as a file ------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "needle"), [
    ("{not json", "not valid JSON"), ("[1, 2]", "JSON object"), ('"hf"', "JSON object"),
    ("[" * 100_000, "not valid JSON"), ("\xff\xfe", "not valid JSON"), ("", "not valid JSON"),
])
def test_malformed_config_json_is_named(hf, text, needle):
    (hf / "config.json").write_bytes(text.encode("latin-1"))
    refused(hf, "config.json", needle)


def test_oversized_config_json_is_refused_unread(hf):
    (hf / "config.json").write_text(" " * (2 << 20) + "{}")
    refused(hf, "config.json", "bytes")


@pytest.mark.timeout(10)
def test_config_json_that_never_ends_is_refused(hf):
    (hf / "config.json").unlink()
    os.mkfifo(hf / "config.json")  # reading a FIFO with no writer would block forever
    refused(hf, "config.json", "not a regular file")


def test_config_json_symlinked_out_of_the_folder(hf, tmp_path):
    outside = tmp_path / "elsewhere.json"
    outside.write_text((hf / "config.json").read_text())
    (hf / "config.json").unlink()
    (hf / "config.json").symlink_to(outside)
    refused(hf, "config.json", "outside the checkpoint folder")


# ---- shard paths ----------------------------------------------------------------------------------
@pytest.fixture
def outside_shard(model, tmp_path):
    """A real, loadable shard of another checkpoint, outside the victim's folder."""
    other = write(model, tmp_path / "other", max_shard_bytes=4_000)
    return sorted(other.glob("model-*.safetensors"))[0]


def _point_first_shard_at(d, target: str):
    first = sorted(d.glob("model-*.safetensors"))[0].name
    edit_index(d, lambda wm: wm.update({k: target for k, v in wm.items() if v == first}))


def test_index_with_an_absolute_shard_path(sharded, outside_shard):
    _point_first_shard_at(sharded, str(outside_shard))
    refused(sharded, "model.safetensors.index.json", str(outside_shard), "must be a file name inside")


def test_index_with_a_dotdot_shard_path(sharded, outside_shard):
    _point_first_shard_at(sharded, f"../other/{outside_shard.name}")
    refused(sharded, "model.safetensors.index.json", "../other", "must be a file name inside")


def test_index_with_a_symlink_out_of_the_folder(sharded, outside_shard):
    (sharded / "evil.safetensors").symlink_to(outside_shard)
    _point_first_shard_at(sharded, "evil.safetensors")
    refused(sharded, "evil.safetensors", "outside the checkpoint folder")


def test_unindexed_shard_symlinked_out_of_the_folder(hf, outside_shard):
    (hf / "model.safetensors").unlink()
    (hf / "model.safetensors").symlink_to(outside_shard)
    refused(hf, "model.safetensors", "outside the checkpoint folder")


@pytest.mark.timeout(10)
def test_shard_that_is_a_fifo_or_a_folder(sharded, hf):
    os.mkfifo(sharded / "pipe.safetensors")
    _point_first_shard_at(sharded, "pipe.safetensors")
    refused(sharded, "pipe.safetensors", "not a regular file")
    (hf / "sub.safetensors").mkdir()
    refused(hf, "sub.safetensors", "not a regular file")


def test_missing_shard_named_in_the_index(sharded):
    _point_first_shard_at(sharded, "model-00099-of-00099.safetensors")
    refused(sharded, "model-00099-of-00099.safetensors", "missing")


@pytest.mark.parametrize("index", ["{oops", "[]", '{"weight_map": []}', '{"weight_map": {}}',
                                   '{"weight_map": {"a": ["x"]}}', '{"weight_map": {"a": 5}}', "{}"])
def test_malformed_index_is_named(sharded, index):
    (sharded / "model.safetensors.index.json").write_text(index)
    refused(sharded, "model.safetensors.index.json")


def test_hugging_face_cache_snapshot_symlinks_still_load(model, tmp_path):
    """hub/models--o--m/snapshots/REV/* are symlinks into ../../blobs: that is not an escape."""
    src = write(model, tmp_path / "src", max_shard_bytes=4_000)
    repo = tmp_path / "hub" / "models--o--m"
    snap, blobs = repo / "snapshots" / "rev1", repo / "blobs"
    snap.mkdir(parents=True)
    blobs.mkdir()
    for f in src.iterdir():
        (blobs / f"blob-{f.name}").write_bytes(f.read_bytes())
        (snap / f.name).symlink_to(f"../../blobs/blob-{f.name}")
    assert torch.equal(load_model(snap).embed.weight, model.embed.weight)


# ---- tensors --------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.float64, torch.float8_e4m3fn, torch.bool])
def test_non_float_tensor_is_named_with_its_file(hf, dtype):
    name = "model.layers.1.mlp.down_proj.weight"
    f = rewrite_tensor(hf, name, lambda t: t.to(dtype))
    refused(hf, f"tensor {name} in {f.name} has dtype")


def test_shape_mismatch_names_tensor_expected_and_found(hf):
    name = "model.layers.0.self_attn.k_proj.weight"
    rewrite_tensor(hf, name, lambda t: torch.zeros(3, 32))
    refused(hf, f"tensor {name} has shape [3, 32], expected [16, 32]")


@pytest.mark.parametrize(("name", "bad"), [
    ("model.layers.1.mlp.down_proj.weight", float("nan")),
    ("model.layers.0.self_attn.q_proj.bias", float("inf")),
    ("model.embed_tokens.weight", float("-inf")),
    ("model.norm.weight", float("nan")),
])
def test_non_finite_weights_are_named(sharded, name, bad):
    def poison(t):
        t = t.clone()
        t.view(-1)[t.numel() // 2] = bad
        return t

    f = rewrite_tensor(sharded, name, poison)
    refused(sharded, f"tensor {name} in {f.name} has NaN or Inf")


def test_nan_in_a_bf16_checkpoint(model, tmp_path):
    d = write(model, tmp_path / "bf16", dtype=torch.bfloat16)
    rewrite_tensor(d, "lm_head.weight", lambda t: torch.full_like(t, float("nan")))
    refused(d, "lm_head.weight", "NaN or Inf")


def test_overflow_when_converting_to_fp16_is_named(hf):
    rewrite_tensor(hf, "model.layers.0.mlp.gate_up_proj.weight", lambda t: t * 1e8)
    assert load_model(hf) is not None  # finite in fp32: huge weights alone are not refused
    refused(hf, "gate_up_proj.weight", "after conversion", dtype=torch.float16)


def test_mixed_dtypes_need_an_explicit_dtype(hf):
    rewrite_tensor(hf, "model.norm.weight", lambda t: t.to(torch.bfloat16))
    refused(hf, "model.norm.weight", "pass dtype=")
    assert load_model(hf, dtype=torch.float32).final_norm.weight.dtype == torch.float32


def test_a_non_float_target_dtype_is_refused(hf):
    with pytest.raises(ValueError, match="dtype must be one of"):
        load_model(hf, dtype=torch.int32)


# ---- the command line -----------------------------------------------------------------------------
def _cli(*args):
    return subprocess.run([sys.executable, "-m", "openglm.cli", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("command", ["info", "generate"])
def test_cli_prints_one_error_line_for_a_bad_config(hf, command):
    edit_config(hf, num_key_value_heads=0)
    extra = ["-n", "1", "hi"] if command == "generate" else []
    p = _cli(command, "--model", str(hf), *extra)
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr and p.stderr.strip().count("\n") == 0, p.stderr
    assert p.stderr.startswith("error: ") and "num_key_value_heads" in p.stderr


def test_cli_prints_one_error_line_for_nan_weights(hf, tmp_path):
    rewrite_tensor(hf, "model.norm.weight", lambda t: torch.full_like(t, float("nan")))
    p = _cli("convert", str(hf), str(tmp_path / "out"))
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.strip() == p.stderr.strip().splitlines()[0] and "model.norm.weight" in p.stderr
