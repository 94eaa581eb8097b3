"""llama.cpp as a contender in the model benchmarks (optional: `--llama-cpp DIR`).

DIR is a llama.cpp source tree with llama-bench built in DIR/build/bin, for instance the copy
vendored in llama-cpp-python's sdist (`pip download llama-cpp-python --no-deps`, unpack, then in
vendor/llama.cpp: `cmake -B build -G Ninja -DGGML_NATIVE=ON -DLLAMA_CURL=OFF && cmake --build
build --target llama-bench`). The benchmark model is saved in transformers' format and converted
by llama.cpp's own convert_hf_to_gguf.py. It has no tokenizer, so the conversion writes a
placeholder vocabulary of the right size (llama-bench feeds random token ids). Rates are
llama-bench's own: pp = prompt tokens/s (next-token logits only), tg = generated tokens/s.
Each call runs one repetition, so its runs alternate with the other contenders'.

    python benchmarks/llamacpp.py convert DIR HF_DIR OUT.gguf f32|bf16   (what convert() runs)
"""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

GGUF_TYPES = {torch.float32: "f32", torch.bfloat16: "bf16"}


class LlamaCpp:
    def __init__(self, root: str | Path, threads: int):
        self.root, self.threads = Path(root), threads
        self.bench = self.root / "build" / "bin" / "llama-bench"
        for need in (self.root / "convert_hf_to_gguf.py", self.bench):
            if not need.exists():
                raise SystemExit(f"--llama-cpp {root}: {need} not found (see benchmarks/llamacpp.py for the build)")
        self.workdir = tempfile.TemporaryDirectory(prefix="openglm-gguf-")

    def convert(self, hf_model, dtype: torch.dtype) -> Path:
        """A GGUF file of the transformers model, in dtype's GGUF type."""
        kind = GGUF_TYPES[dtype]
        hf_dir, out = Path(self.workdir.name) / f"hf-{kind}", Path(self.workdir.name) / f"model-{kind}.gguf"
        hf_model.save_pretrained(hf_dir)
        done = subprocess.run([sys.executable, __file__, "convert", str(self.root), str(hf_dir), str(out), kind],
                              capture_output=True, text=True)
        if done.returncode or not out.exists():
            raise SystemExit(f"llama.cpp's converter failed on {hf_dir}:\n{done.stderr[-2000:]}")
        return out

    def rate(self, gguf: Path, prompt: int = 0, generate: int = 0) -> float:
        """tokens/s of one llama-bench repetition: a prompt of `prompt` tokens or `generate` new ones."""
        done = subprocess.run([str(self.bench), "-m", str(gguf), "-p", str(prompt), "-n", str(generate),
                               "-t", str(self.threads), "-r", "1", "-o", "json"], capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"llama-bench failed on {gguf}:\n{done.stderr[-2000:]}")
        (row,) = json.loads(done.stdout)
        return row["avg_ts"]


def _convert(root: str, hf_dir: str, out: str, kind: str) -> None:
    sys.path[:0] = [root, str(Path(root) / "gguf-py")]
    from conversion.chatglm import ChatGLMModel  # llama.cpp's class for GlmForCausalLM

    def placeholder_vocab(self):
        n = self.hparams["vocab_size"]
        w = self.gguf_writer
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list([f"<0x{i:02X}>" for i in range(256)] + [f"t{i}" for i in range(256, n)])
        w.add_token_scores([0.0] * n)
        w.add_token_types([6] * 256 + [1] * (n - 256))  # byte tokens, then normal ones
        w.add_eos_token_id(1)

    ChatGLMModel.set_vocab = placeholder_vocab
    sys.argv = ["convert_hf_to_gguf.py", hf_dir, "--outtype", kind, "--outfile", out]
    runpy.run_path(str(Path(root) / "convert_hf_to_gguf.py"), run_name="__main__")


if __name__ == "__main__":
    if len(sys.argv) != 6 or sys.argv[1] != "convert":
        raise SystemExit(__doc__)
    _convert(*sys.argv[2:])
