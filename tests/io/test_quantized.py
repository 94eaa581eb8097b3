"""Quantized checkpoints: written tensor by tensor, read back exactly, refused when damaged."""

import json
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import openglm
from openglm.embedded import EMBEDDED_DIR
from openglm.io import CheckpointError, load_model, quantize_checkpoint, save_model
from openglm.model import QuantSpec
from openglm.model.quant import quantize_weight
from tests.conftest import make_hf

IDS = torch.tensor([[5, 17, 423, 44, 88, 102, 7, 7, 300, 12]])


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A GLM-4-0414 checkpoint in transformers' format (split q/k/v, sandwich norms), three shards."""
    d = tmp_path_factory.mktemp("glm4")
    make_hf("glm4", seed=5, vocab_size=512, intermediate_size=192).save_pretrained(d, max_shard_size="100KB")
    return d


@pytest.mark.parametrize("spec", [QuantSpec(8), QuantSpec(4, 32), QuantSpec(4, 64, head=False, embedding=False)],
                         ids=lambda s: f"{s.name}-head{int(s.head)}")
def test_quantize_save_load_gives_identical_tensors_and_logits(source, tmp_path, spec):
    dst = quantize_checkpoint(source, tmp_path / "q", spec, max_shard_bytes=50_000)
    assert len(list(dst.glob("*.safetensors"))) > 1 and (dst / "model.safetensors.index.json").exists()
    full = load_model(source)
    stored = {}
    for f in dst.glob("*.safetensors"):
        stored.update(load_file(f))
    for name in ("layers.0.attn.qkv", "layers.1.mlp.gate_up", "layers.1.mlp.down"):
        want = quantize_weight(full.get_submodule(name).weight, spec.bits, spec.group_size)
        for key, t in want.items():
            assert torch.equal(stored[f"{name}.{key}"], t), (name, key)
    assert torch.equal(stored["layers.0.attn.qkv.bias"], full.layers[0].attn.qkv.bias)
    assert ("lm_head.qweight" in stored) == spec.head and ("embed.qweight" in stored) == spec.embedding
    on_the_fly, reloaded = load_model(source, quantize=spec), openglm.load_model(dst)
    with torch.no_grad():
        a, b, ref = on_the_fly(IDS), reloaded(IDS), full(IDS)
    assert torch.equal(a, b)
    assert (a.softmax(-1) - ref.softmax(-1)).abs().max() < (0.02 if spec.bits == 8 else 0.2)
    assert json.loads((dst / "config.json").read_text())["openglm_quantization"]["bits"] == spec.bits


def test_embedded_model_quantizes_with_its_tokenizer(tmp_path):
    dst = quantize_checkpoint(EMBEDDED_DIR, tmp_path / "int8", "int8")
    tok = openglm.load_tokenizer(dst)
    model = load_model(dst).for_inference()
    reply = openglm.generate(model, tok, [{"role": "user", "content": "What is 2 + 2?"}], 16)
    assert isinstance(reply, str) and reply.strip()
    size = sum(f.stat().st_size for f in dst.glob("*.safetensors"))
    full = sum(f.stat().st_size for f in EMBEDDED_DIR.glob("*.safetensors"))
    # bf16 -> int8, plus per-row scales; the tied head is stored once for the embedding, once for the matmul
    assert size < 0.75 * full


def _damage(dst, name, tensor=None):
    f = next(dst.glob("*.safetensors"))
    tensors = load_file(f)
    if tensor is None:
        tensors.pop(name)
    else:
        tensors[name] = tensor
    save_file(tensors, f)


def test_damaged_quantized_checkpoints_are_refused_by_name(source, tmp_path):
    dst = quantize_checkpoint(source, tmp_path / "q", QuantSpec(4, 32))
    bad = tmp_path / "bad"
    for _case, change, message in [
        ("missing", lambda d: _damage(d, "layers.1.mlp.down.zeros"), "missing, e.g. \\['layers.1.mlp.down.zeros'\\]"),
        ("dtype", lambda d: _damage(d, "layers.0.attn.proj.qweight", torch.zeros(64, 32, dtype=torch.int8)),
         "layers.0.attn.proj.qweight is torch.int8 \\[64, 32\\], expected torch.uint8"),
        ("extra", lambda d: _damage(d, "layers.0.attn.proj.weight", torch.zeros(2)), "is not part of"),
        ("bits", lambda d: (d / "config.json").write_text(json.dumps(
            {**json.loads((d / "config.json").read_text()),
             "openglm_quantization": {"method": "openglm-weight-only", "bits": 2}})), "bits must be 8 or 4"),
    ]:
        shutil.rmtree(bad, ignore_errors=True)
        shutil.copytree(dst, bad)
        change(bad)
        with pytest.raises(CheckpointError, match=message):
            load_model(bad)
    with pytest.raises(CheckpointError, match="quantized model already"):
        load_model(dst, quantize="int8")
    with pytest.raises(ValueError, match="openglm quantize SRC DST"):
        save_model(load_model(dst), tmp_path / "again")


def test_streaming_quantized_load_holds_one_tensor_at_a_time(tmp_path):
    """Memory growth while loading a ~300 MB bf16 checkpoint with quantize='int8' stays within 1.3x
    the quantized model plus the largest shard (holding the checkpoint would take 470 MB or more).
    Counted as anonymous memory: peak RSS minus the file-backed part, whose library pages come and
    go with the page cache (they moved the plain RSS baseline by 190 MB between runs)."""
    src = tmp_path / "big"
    make = f"""
        import torch
        from openglm.model import GLM, GLMConfig
        from openglm.io import save_model
        cfg = GLMConfig(vocab_size=32768, hidden_size=1024, num_layers=8, num_heads=8, num_kv_heads=2,
                        head_dim=128, ffn_hidden_size=2816)
        torch.manual_seed(0)
        save_model(GLM(cfg).to(torch.bfloat16), {str(src)!r}, max_shard_bytes=64 << 20)
    """
    subprocess.run([sys.executable, "-c", textwrap.dedent(make)], check=True)
    measure = f"""
        import json
        import torch
        from openglm.io import load_model
        from openglm.model import GLM, GLMConfig, QuantSpec, quantize_model
        def status(key):
            line = next(l for l in open("/proc/self/status") if l.startswith(key + ":"))
            return int(line.split()[1]) * 1024
        quantize_model(GLM(GLMConfig.from_preset("nano")), QuantSpec(8))  # warm up torch's code paths
        before = status("RssAnon")
        model = load_model({str(src)!r}, quantize="int8")
        peak_anon = status("VmHWM") - status("RssFile")  # file-backed pages only grow after the peak
        size = sum(t.nbytes for t in model.state_dict().values())
        print(json.dumps({{"growth": peak_anon - before, "quantized": size}}))
    """
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(measure)], check=True, capture_output=True, text=True)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    shards = list(src.glob("*.safetensors"))
    largest = max(f.stat().st_size for f in shards)
    total = sum(f.stat().st_size for f in shards)
    assert total > 250e6 and len(shards) > 3
    assert 0 < figures["growth"] <= 1.3 * figures["quantized"] + largest, (figures, largest, total)
    with safe_open(str(shards[0]), "pt") as h:
        assert h.get_tensor(next(iter(h.keys()))).dtype == torch.bfloat16


def test_cli_quantizes_and_generates_and_names_bad_settings(tmp_path):
    from typer.testing import CliRunner

    from openglm.cli import app

    runner = CliRunner()
    done = runner.invoke(app, ["quantize", str(EMBEDDED_DIR), str(tmp_path / "q4"), "--bits", "4",
                               "--group-size", "32"])
    assert done.exit_code == 0, done.output
    reply = runner.invoke(app, ["generate", "--model", str(tmp_path / "q4"), "What is 2 + 2?", "-n", "8"])
    assert reply.exit_code == 0 and reply.stdout.strip()
    on_load = runner.invoke(app, ["generate", "What is 2 + 2?", "-n", "8", "--quantize", "int8"])
    assert on_load.exit_code == 0 and on_load.stdout.strip()
    for args, words in [(["--bits", "5"], "bits must be 8 or 4"), (["--bits", "4", "--group-size", "48"],
                                                                    "group size must be one of")]:
        bad = runner.invoke(app, ["quantize", str(EMBEDDED_DIR), str(tmp_path / "bad"), *args])
        assert bad.exit_code != 0 and words in bad.output and "Traceback" not in bad.output
        assert len(bad.output.strip().splitlines()) == 1


def test_packing_and_upcasting_stop_where_memory_runs_out(monkeypatch):
    from openglm.model import GLM, GLMConfig, cpu

    def packed_layers(model):
        return sum(bool(getattr(m, "packed", False)) for m in model.modules())

    def packed_bytes(model):
        return sum(m.weight.nbytes for m in model.modules() if getattr(m, "packed", False))

    roomy = GLM(GLMConfig.from_preset("nano")).for_inference()
    one_layer = roomy.layers[0].mlp.gate_up.weight.nbytes
    monkeypatch.setattr(cpu, "available_memory", lambda: 3 * one_layer)  # room for about one more copy
    tight = GLM(GLMConfig.from_preset("nano")).for_inference()
    assert packed_layers(roomy) == 1 + 4 * len(roomy.layers)  # (tied head) + 4 linears a block
    assert 0 < packed_bytes(tight) <= 1.5 * one_layer < packed_bytes(roomy)  # half of what is available
    half = GLM(GLMConfig.from_preset("nano")).to(torch.bfloat16).for_inference()
    assert half.final_norm.weight.dtype == torch.bfloat16  # an fp32 copy would not fit either
