"""Batch-1 decode speed of weight-only quantized models, against llama.cpp's Q8_0 / Q4_0.

Part 1, the ~123M benchmark GLM (hidden 768, 12 layers, 12 heads, 2 KV heads, vocab 32768),
random weights: openglm in fp32 (oneDNN-packed), bf16 (as loaded; `for_inference` computes it in
fp32 where the CPU has no bf16 math), int8 and int4 (group 64), eager and with the compiled
decoding step. With `--llama-cpp DIR` the same weights go to GGUF through openglm's own exporter
(Q8_0 and Q4_0) and llama-bench's tg rate joins; `ratio_q8` = openglm int8 / llama.cpp Q8_0,
`ratio_q4` = openglm int4 / llama.cpp Q4_0 (each openglm figure the better of eager and compiled).

Part 2 (`--big`), the glm-4-9b-chat preset with random INT4 weights built tensor by tensor: peak
RSS, decode tok/s, and the share of the memory roofline (bytes read per token / read bandwidth).

Decode speed excludes the prefill: (N - 1) / (time(N tokens) - time(1 token)).

    python benchmarks/bench_quant.py [--threads 2] [--tokens 64] [--rounds 3] [--llama-cpp DIR] [--big] [--json]
"""

from __future__ import annotations

import copy
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_decode import decode_rate, ours_run, read_bandwidth_gbs  # noqa: E402
from common import BENCH_SHAPE, arg_parser, best_rates, machine, report  # noqa: E402
from llamacpp import LlamaCpp  # noqa: E402

from openglm.infer import compile_decoding  # noqa: E402
from openglm.io import save_model  # noqa: E402
from openglm.io.gguf_file import export_gguf  # noqa: E402
from openglm.model import GLM, GLMConfig, QuantSpec, quantize_model  # noqa: E402
from openglm.model.quant import random_quantized_glm  # noqa: E402
from openglm.tokenizer import default_tokenizer  # noqa: E402


def bench_config() -> GLMConfig:
    s = BENCH_SHAPE
    return GLMConfig(vocab_size=s["vocab_size"], hidden_size=s["hidden_size"], num_layers=s["num_hidden_layers"],
                     num_heads=s["num_attention_heads"], num_kv_heads=s["num_key_value_heads"], head_dim=s["head_dim"],
                     ffn_hidden_size=s["intermediate_size"], max_seq_len=4096)


def bytes_per_token(model) -> int:
    """What one decoding step reads: every weight and scale once, the embedding table not at all."""
    embed = {t.data_ptr() for t in model.embed.state_dict().values()}
    tensors = {t.data_ptr(): t for t in model.state_dict().values() if t.data_ptr() not in embed}
    return sum(t.nbytes for t in tensors.values())


def part_small(threads: int, tokens: int, rounds: int, llama: LlamaCpp | None) -> dict:
    torch.manual_seed(0)
    base = GLM(bench_config()).eval()
    models = {"fp32": copy.deepcopy(base).for_inference(),
              "bf16": copy.deepcopy(base).to(torch.bfloat16).for_inference(),
              "int8": quantize_model(copy.deepcopy(base), QuantSpec(8)).for_inference(),
              "int4": quantize_model(copy.deepcopy(base), QuantSpec(4, 64)).for_inference()}
    compile_s = {}
    for name in ("fp32", "int8", "int4"):
        compiled = compile_decoding(copy.deepcopy(models[name]))
        t0 = time.perf_counter()
        with torch.inference_mode():
            ours_run(compiled)(2)
        compile_s[name] = time.perf_counter() - t0
        models[f"{name}_compiled"] = compiled
    measures = {name: (lambda m=m: decode_rate(ours_run(m), tokens)) for name, m in models.items()}
    if llama:
        with tempfile.TemporaryDirectory() as d:
            save_model(base, Path(d) / "m")
            default_tokenizer().save(Path(d) / "m")
            for kind in ("q8_0", "q4_0"):
                gguf = Path(llama.workdir.name) / f"bench-{kind}.gguf"
                export_gguf(Path(d) / "m", gguf, kind)
                measures[f"llama.cpp {kind}"] = lambda g=gguf: llama.rate(g, generate=tokens)
    with torch.inference_mode():
        rates = best_rates(measures, rounds)
    sizes = {name: bytes_per_token(models[name]) for name in ("fp32", "bf16", "int8", "int4")}
    for name, rate in rates.items():
        size = f"  {sizes[name] / 2**20:7.1f} MiB read per token" if name in sizes else ""
        print(f"{name:18s} {rate:7.1f} tok/s{size}")
    out = {"rates": rates, "bytes_per_token": sizes, "compile_s": compile_s}
    best = {k: max(rates[k], rates[f"{k}_compiled"]) for k in ("fp32", "int8", "int4")}
    out["best"] = best
    if llama:
        out["ratio_q8"] = best["int8"] / rates["llama.cpp q8_0"]
        out["ratio_q4"] = best["int4"] / rates["llama.cpp q4_0"]
    out["ratio"] = best["int4"] / best["fp32"]  # against openglm's own fp32 when llama.cpp is absent
    return out


def part_big(tokens: int, bandwidth: float) -> dict:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    model = random_quantized_glm(GLMConfig.from_preset("glm-4-9b-chat"), QuantSpec(4, 64),
                                 dtype=torch.bfloat16).for_inference()
    build_s = time.perf_counter() - t0
    with torch.inference_mode():
        rate = decode_rate(ours_run(model), tokens)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    read = bytes_per_token(model)
    roof = bandwidth * 1e9 / read
    print(f"glm-4-9b-chat int4-g64: {rate:.2f} tok/s, roofline {roof:.2f} ({rate / roof:.0%}), peak RSS "
          f"{peak / 2**30:.2f} GiB, {read / 2**30:.2f} GiB read per token, built in {build_s:.0f} s")
    return {"tok_s": rate, "roofline": roof, "roofline_share": rate / roof, "peak_rss_gib": peak / 2**30,
            "rss_before_gib": before / 2**30, "gib_per_token": read / 2**30, "build_s": build_s}


def main() -> None:
    ap = arg_parser(__doc__, rounds=3, llama_cpp=True)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--big", action="store_true", help="also the glm-4-9b-chat preset in INT4 (~6 GB, minutes)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    bandwidth = read_bandwidth_gbs()
    llama = LlamaCpp(args.llama_cpp, args.threads) if args.llama_cpp else None
    out = {"benchmark": "quant", "machine": machine(), "read_bandwidth_gbs": bandwidth}
    out.update(part_small(args.threads, args.tokens, args.rounds, llama))
    if args.big:
        out["glm_4_9b_int4"] = part_big(min(args.tokens, 8), bandwidth)
    vs = (f"vs llama.cpp: int8/Q8_0 {out['ratio_q8']:.2f}, int4/Q4_0 {out['ratio_q4']:.2f}; " if llama else "")
    report(f"{vs}int4/fp32 {out['ratio']:.2f} ({time.time() - t0:.0f} s)", out, args.json)


if __name__ == "__main__":
    main()
