"""Batch-1 decode speed (tokens/s) of openglm vs transformers' generate, and the memory roofline.

Same ~123M GLM as bench_forward (hidden 768, 12 layers, 12 heads, 2 KV heads, vocab 32768),
same random weights, same run, fp32 and bf16, greedy. Decode speed excludes the prefill:
tokens/s = (N - 1) / (time(N new tokens) - time(1 new token)), measured the same way for all.
openglm runs twice: eager (oneDNN-packed weights) and with its compiled decoding step
(`infer.compile_decoding`; the compile, timed separately, is excluded like the prefill).
`ratio` / `ratio_bf16` take the compiled step; `ratio_eager` / `ratio_eager_bf16` the eager one.
The roofline is the speed at which just reading the weights once per token would run, at the
read bandwidth measured here (a streaming sum over 1 GB).

With `--llama-cpp DIR` llama.cpp's llama-bench joins (its tg rate on a GGUF made by its own converter
from the same weights; see llamacpp.py) and the JSON holds `ratio_llamacpp` / `ratio_llamacpp_bf16`.

    python benchmarks/bench_decode.py [--threads 2] [--tokens 128] [--rounds 3] [--llama-cpp DIR] [--json]
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import arg_parser, best_rates, best_time, machine, make_pair, report  # noqa: E402
from llamacpp import LlamaCpp  # noqa: E402

from openglm.infer import Sampling, compile_decoding, generate_ids  # noqa: E402

PROMPT = [list(range(100, 116))]


def read_bandwidth_gbs() -> float:
    x = torch.ones(256 * 2**20)  # 1 GiB of fp32
    return x.numel() * 4 / best_time(lambda: x.sum(), repeats=5) / 1e9


def weight_bytes_per_token(model) -> int:
    """Every weight matrix is read once per token except the embedding table (one row)."""
    skip = model.embed.weight.data_ptr()
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() in seen:
            continue
        seen.add(p.data_ptr())
        total += p.numel() * p.element_size() if p.data_ptr() != skip else 0
    if model.config.tie_embeddings:
        total += model.embed.weight.numel() * model.embed.weight.element_size()
    return total


def decode_rate(run, n: int) -> float:
    """tokens/s of the decode phase only: difference of an n-token and a 1-token run."""
    one = best_time(lambda: run(1), repeats=2)
    many = best_time(lambda: run(n), repeats=1)
    return (n - 1) / (many - one)


def ours_run(model):
    def run(n):
        for _ in generate_ids(model, PROMPT, n, Sampling(), stop_ids=()):
            pass
    return run


def hf_run(model):
    ids = torch.tensor(PROMPT)

    def run(n):
        model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None,
                       pad_token_id=0)
    return run


def run(threads: int, tokens: int, rounds: int, llama_dir: str | None) -> dict:
    torch.set_num_threads(threads)
    llama = LlamaCpp(llama_dir, threads) if llama_dir else None
    bw = read_bandwidth_gbs()
    results = {"read_bandwidth_gbs": bw}
    for dtype in (torch.float32, torch.bfloat16):
        ours, hf = make_pair(dtype)
        ours.pack_weights()
        gguf = llama.convert(hf, dtype) if llama else None
        name = str(dtype).removeprefix("torch.")
        compiled_model = compile_decoding(copy.deepcopy(ours))  # outside inference_mode: normal tensors
        with torch.inference_mode():
            t0 = time.perf_counter()
            ours_run(compiled_model)(2)  # the first decoding step compiles
            compile_s = time.perf_counter() - t0
            runs = {"compiled": ours_run(compiled_model), "eager": ours_run(ours), "transformers": hf_run(hf)}
            measures = {name: lambda run=run: decode_rate(run, tokens) for name, run in runs.items()}
            if gguf:
                measures["llama.cpp"] = lambda g=gguf: llama.rate(g, generate=tokens)
            rates = best_rates(measures, rounds)
        compiled, eager, b = rates["compiled"], rates["eager"], rates["transformers"]
        roof = bw * 1e9 / weight_bytes_per_token(ours)
        results[name] = {"openglm": compiled, "openglm_eager": eager, "compile_s": compile_s, "transformers": b,
                         "roofline": roof}
        also = ""
        if gguf:
            results[name]["llama.cpp"] = rates["llama.cpp"]
            also = f" | llama.cpp {rates['llama.cpp']:6.1f}"
        print(f"{name:9s} openglm {compiled:6.1f} tok/s compiled ({compile_s:.0f} s to compile), {eager:6.1f} "
              f"eager | transformers {b:6.1f}{also} | roofline {roof:6.1f} ({compiled / roof:.0%} of it)")
        del ours, hf, compiled_model
    fp, bf = results["float32"], results["bfloat16"]
    out = {"benchmark": "decode", "machine": machine(), "results": results,
           "ratio": fp["openglm"] / fp["transformers"], "ratio_bf16": bf["openglm"] / bf["transformers"],
           "ratio_eager": fp["openglm_eager"] / fp["transformers"],
           "ratio_eager_bf16": bf["openglm_eager"] / bf["transformers"]}
    if llama:
        out["ratio_llamacpp"] = fp["openglm"] / fp["llama.cpp"]
        out["ratio_llamacpp_bf16"] = bf["openglm"] / bf["llama.cpp"]
    return out


def main() -> None:
    ap = arg_parser(__doc__, rounds=3, llama_cpp=True)
    ap.add_argument("--tokens", type=int, default=128)
    args = ap.parse_args()
    t0 = time.time()
    out = run(args.threads, args.tokens, args.rounds, args.llama_cpp)
    also = (f"  vs llama.cpp: fp32 {out['ratio_llamacpp']:.2f} bf16 {out['ratio_llamacpp_bf16']:.2f}"
            if args.llama_cpp else "")
    report(f"ratio fp32 {out['ratio']:.2f}  bf16 {out['ratio_bf16']:.2f}{also}  (eager: fp32 {out['ratio_eager']:.2f}  "
           f"bf16 {out['ratio_eager_bf16']:.2f}; read bandwidth "
           f"{out['results']['read_bandwidth_gbs']:.1f} GB/s; {time.time() - t0:.0f} s)", out, args.json)


if __name__ == "__main__":
    main()
