"""Prefill throughput (tokens/s) of openglm vs transformers' GlmForCausalLM, same weights, same run.

The ~123M benchmark GLM (hidden 768, 12 layers, 12 heads, 2 KV heads, head_dim 64, FFN 2048,
vocab 32768), batch 1 x 512 and 8 x 128, fp32 and bf16, 2 threads.

"Prefill" means what an inference engine does with a prompt: run every position and produce
the next-token logits (llama.cpp's pp512 does the same). openglm therefore computes logits for
the last position only. transformers is timed twice: its plain forward (all logits; the anchor
figure quoted in the issue, `ratio`) and with logits_to_keep=1 (the same work; `ratio_same_work`).

With `--llama-cpp DIR` llama.cpp's llama-bench joins the 1 x 512 rows (its pp512 on a GGUF made
by its own converter from the same weights; see llamacpp.py) and the JSON holds
`ratio_llamacpp` / `ratio_llamacpp_bf16` (openglm / llama.cpp).

    python benchmarks/bench_forward.py [--threads 2] [--rounds 10] [--llama-cpp DIR] [--json]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import arg_parser, best_rates, best_time, machine, make_pair, report  # noqa: E402
from llamacpp import LlamaCpp  # noqa: E402

SHAPES = [(1, 512), (8, 128)]


def bench_dtype(dtype: torch.dtype, rounds: int, llama: LlamaCpp | None) -> dict:
    ours, hf = make_pair(dtype)
    ours.for_inference(upcast=False, pack=False)  # the CPU inference modules, in the dtype under test
    gguf = llama.convert(hf, dtype) if llama else None
    name = str(dtype).removeprefix("torch.")
    rows = {}
    for b, t in SHAPES:
        ids = torch.randint(0, 32768, (b, t), generator=torch.Generator().manual_seed(0))
        fns = {"openglm": lambda x=ids: ours(x, logits_to_keep=1), "transformers": lambda x=ids: hf(x),
               "transformers_last_logits": lambda x=ids: hf(x, logits_to_keep=1)}
        with torch.inference_mode():
            for fn in fns.values():
                fn()  # warm-up
            measures = {k: lambda fn=fn, n=b * t: n / best_time(fn, repeats=1, warmup=0) for k, fn in fns.items()}
            if gguf and b == 1:  # llama-bench's pp test is one sequence
                measures["llama.cpp"] = lambda n=t: llama.rate(gguf, prompt=n)
            row = best_rates(measures, rounds)
        rows[f"{name}_{b}x{t}"] = row
        also = f" | llama.cpp {row['llama.cpp']:8.0f}" if "llama.cpp" in row else ""
        print(f"{name:9s} {b}x{t:<4d} openglm {row['openglm']:8.0f} tok/s | transformers "
              f"{row['transformers']:8.0f} (last-logits only {row['transformers_last_logits']:8.0f}){also}")
    return rows


def run(threads: int, rounds: int, llama_dir: str | None) -> dict:
    torch.set_num_threads(threads)
    llama = LlamaCpp(llama_dir, threads) if llama_dir else None
    results = {**bench_dtype(torch.float32, rounds, llama), **bench_dtype(torch.bfloat16, rounds, llama)}
    fp, bf = results["float32_1x512"], results["bfloat16_1x512"]
    out = {
        "benchmark": "prefill", "machine": machine(), "results": results,
        "ratio": fp["openglm"] / fp["transformers"],
        "ratio_bf16": bf["openglm"] / bf["transformers"],
        "ratio_same_work": fp["openglm"] / fp["transformers_last_logits"],
        "ratio_bf16_same_work": bf["openglm"] / bf["transformers_last_logits"],
    }
    if llama:
        out["ratio_llamacpp"] = fp["openglm"] / fp["llama.cpp"]
        out["ratio_llamacpp_bf16"] = bf["openglm"] / bf["llama.cpp"]
    return out


def main() -> None:
    ap = arg_parser(__doc__, rounds=10, llama_cpp=True)
    args = ap.parse_args()
    out = run(args.threads, args.rounds, args.llama_cpp)
    also = (f"  vs llama.cpp: fp32 {out['ratio_llamacpp']:.2f} bf16 {out['ratio_llamacpp_bf16']:.2f}"
            if args.llama_cpp else "")
    report(f"ratio (fp32 1x512, openglm/transformers) {out['ratio']:.2f}  bf16 {out['ratio_bf16']:.2f}  "
           f"same work: fp32 {out['ratio_same_work']:.2f} bf16 {out['ratio_bf16_same_work']:.2f}{also}",
           out, args.json)


if __name__ == "__main__":
    main()
