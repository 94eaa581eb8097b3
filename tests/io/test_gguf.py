"""GGUF export: read back with llama.cpp's own gguf reader, and run in llama.cpp where one is built."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import openglm
from openglm.embedded import EMBEDDED_DIR
from openglm.io.checkpoint import read_checkpoint
from openglm.io.gguf_file import export_gguf
from openglm.tokenizer import load_tokenizer
from tests.conftest import make_hf

gguf = pytest.importorskip("gguf")


def _llama_completion() -> str | None:
    """llama.cpp's llama-completion: $LLAMA_CPP_BIN/llama-completion, else on PATH, else the usual build spot."""
    for candidate in (Path(os.environ.get("LLAMA_CPP_BIN", "/nonexistent")) / "llama-completion",
                      shutil.which("llama-completion"), Path("/opt/llama.cpp/bin/llama-completion")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    return None


LLAMA = _llama_completion()
needs_llama = pytest.mark.skipif(LLAMA is None, reason="no llama.cpp build (set LLAMA_CPP_BIN to the folder "
                                 "holding llama-completion)")


@pytest.fixture(scope="module")
def glm4_dir(tmp_path_factory):
    """A GLM-4-0414 layout (sandwich norms, split q/k/v in GGUF) with the embedded model's tokenizer."""
    d = tmp_path_factory.mktemp("glm4")
    make_hf("glm4", seed=2, vocab_size=8192, hidden_size=128, num_attention_heads=4, num_key_value_heads=2,
            head_dim=32, intermediate_size=256, max_position_embeddings=512).save_pretrained(d)
    load_tokenizer(EMBEDDED_DIR).save(d)
    return d


@pytest.mark.parametrize("kind", ["f32", "f16", "q8_0", "q4_0"])
def test_gguf_reads_back_with_every_tensor_the_vocabulary_and_the_template(tmp_path, kind):
    out = tmp_path / f"m-{kind}.gguf"
    report = export_gguf(EMBEDDED_DIR, out, kind)
    reader = gguf.GGUFReader(out)
    cfg, state = read_checkpoint(EMBEDDED_DIR)
    tensors = {t.name: t for t in reader.tensors}
    assert report["architecture"] == "chatglm" and len(tensors) == report["tensors"] == 3 + 7 * cfg.num_layers
    qkv = tensors["blk.0.attn_qkv.weight"]
    assert list(qkv.shape) == [cfg.hidden_size, cfg.q_size + 2 * cfg.kv_size]  # ggml lists ne0 (columns) first
    want = {"f32": "F32", "f16": "F16", "q8_0": "Q8_0", "q4_0": "Q4_0"}[kind]
    assert qkv.tensor_type.name == want and tensors["blk.0.attn_qkv.bias"].tensor_type.name == "F32"
    back = gguf.quants.dequantize(tensors["blk.1.mlp.down.weight".replace("mlp.down", "ffn_down")].data,
                                  qkv.tensor_type).reshape(cfg.hidden_size, cfg.ffn_hidden_size)
    err = (torch.from_numpy(back.astype("float32")) - state["layers.1.mlp.down.weight"].float()).abs().max()
    assert err < {"f32": 1e-7, "f16": 1e-3, "q8_0": 0.01, "q4_0": 0.1}[kind] * state["layers.1.mlp.down.weight"
                                                                                   ].abs().max()

    def field(name):
        f = reader.fields[name]
        return f.contents()

    tok = load_tokenizer(EMBEDDED_DIR)
    tokens = field("tokenizer.ggml.tokens")
    assert len(tokens) == cfg.vocab_size and tokens[tok.special_ids["<|user|>"]] == "<|user|>"
    assert tokens[tok.encode("Paris")[0]] == tok.decode(tok.encode("Paris")[:1])
    assert "[gMASK]<sop>" in field("tokenizer.chat_template")
    assert field("chatglm.rope.dimension_count") == cfg.rotary_dim
    assert field("chatglm.block_count") == cfg.num_layers
    assert field("tokenizer.ggml.eom_token_id") == tok.special_ids["<|observation|>"]


def test_0414_layout_exports_as_glm4_with_split_qkv_and_post_norms(glm4_dir, tmp_path):
    report = export_gguf(glm4_dir, tmp_path / "g.gguf", "f16")
    names = {t.name for t in gguf.GGUFReader(tmp_path / "g.gguf").tensors}
    assert report["architecture"] == "glm4" and report["same_pre_tokenizer"] is False
    assert {"blk.1.attn_q.bias", "blk.1.attn_k.weight", "blk.1.post_attention_norm.weight",
            "blk.1.post_ffw_norm.weight", "output.weight"} <= names and "blk.0.attn_qkv.weight" not in names


def test_cli_writes_gguf_and_names_a_bad_type(tmp_path):
    from typer.testing import CliRunner

    from openglm.cli import app

    ok = CliRunner().invoke(app, ["convert", str(EMBEDDED_DIR), str(tmp_path / "m.gguf"), "--format", "gguf",
                                  "--type", "q8_0"])
    assert ok.exit_code == 0 and (tmp_path / "m.gguf").stat().st_size > 1e6
    bad = CliRunner().invoke(app, ["convert", str(EMBEDDED_DIR), str(tmp_path / "n.gguf"), "--format", "gguf",
                                   "--type", "q5_k"])
    assert bad.exit_code != 0 and "q5_k" in bad.output and "Traceback" not in bad.output


def _llama_greedy(path: Path, prompt: str, n: int) -> str:
    done = subprocess.run([LLAMA, "-m", str(path), "-p", prompt, "-n", str(n), "--temp", "0", "-no-cnv",
                           "--no-warmup", "-t", "2", "--simple-io"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.removeprefix(prompt)


@needs_llama
@pytest.mark.parametrize("which", ["embedded-chatglm", "random-glm4"])
def test_llama_cpp_runs_the_exported_model_and_decodes_our_tokens(which, glm4_dir, tmp_path):
    """f32 export: llama.cpp's greedy continuation of a raw prompt is ours, token for token."""
    src = EMBEDDED_DIR if which.startswith("embedded") else glm4_dir
    out = tmp_path / "m.gguf"
    export_gguf(src, out, "f32")
    prompt = "What is 2 + 2?"  # tokenized alike by both pre-tokenizers
    model, tok = openglm.load_model(src).for_inference(), load_tokenizer(src)
    ours = openglm.generate(model, tok, prompt, 12)
    theirs = _llama_greedy(out, prompt, 12)
    assert theirs.strip() and theirs.startswith(ours[: max(8, len(ours) // 2)]), (ours, theirs)
