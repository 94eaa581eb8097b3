"""Prefill throughput (tokens/s) of openglm vs transformers' GlmForCausalLM, same weights, same run.

The ~123M GLM of issue #2 (hidden 768, 12 layers, 12 heads, 2 KV heads, head_dim 64, FFN 2048,
vocab 32768), batch 1 x 512 and 8 x 128, fp32 and bf16, 2 threads.

"Prefill" means what an inference engine does with a prompt: run every position and produce
the next-token logits (llama.cpp's pp512 does the same). openglm therefore computes logits for
the last position only. transformers is timed twice: its plain forward (all logits; the anchor
figure quoted in the issue, `ratio`) and with logits_to_keep=1 (the same work; `ratio_same_work`).

    python benchmarks/bench_forward.py [--threads 2] [--rounds 5] [--json]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import arg_parser, best_times, machine, make_pair, report  # noqa: E402

SHAPES = [(1, 512), (8, 128)]


def bench_dtype(dtype: torch.dtype, rounds: int) -> dict:
    ours, hf = make_pair(dtype)
    name = str(dtype).removeprefix("torch.")
    rows = {}
    for b, t in SHAPES:
        ids = torch.randint(0, 32768, (b, t), generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            times = best_times({"openglm": lambda x=ids: ours(x, logits_to_keep=1),
                                "transformers": lambda x=ids: hf(x),
                                "transformers_last_logits": lambda x=ids: hf(x, logits_to_keep=1)}, rounds)
        row = {name: b * t / s for name, s in times.items()}
        rows[f"{name}_{b}x{t}"] = row
        print(f"{name:9s} {b}x{t:<4d} openglm {row['openglm']:8.0f} tok/s | transformers "
              f"{row['transformers']:8.0f} (last-logits only {row['transformers_last_logits']:8.0f})")
    return rows


def run(threads: int, rounds: int) -> dict:
    torch.set_num_threads(threads)
    results = {**bench_dtype(torch.float32, rounds), **bench_dtype(torch.bfloat16, rounds)}
    fp, bf = results["float32_1x512"], results["bfloat16_1x512"]
    return {
        "benchmark": "prefill", "machine": machine(), "results": results,
        "ratio": fp["openglm"] / fp["transformers"],
        "ratio_bf16": bf["openglm"] / bf["transformers"],
        "ratio_same_work": fp["openglm"] / fp["transformers_last_logits"],
        "ratio_bf16_same_work": bf["openglm"] / bf["transformers_last_logits"],
    }


def main() -> None:
    ap = arg_parser(__doc__, rounds=5)
    args = ap.parse_args()
    out = run(args.threads, args.rounds)
    report(f"ratio (fp32 1x512, openglm/transformers) {out['ratio']:.2f}  bf16 {out['ratio_bf16']:.2f}  "
           f"same work: fp32 {out['ratio_same_work']:.2f} bf16 {out['ratio_bf16_same_work']:.2f}", out, args.json)


if __name__ == "__main__":
    main()
