"""Training throughput (tokens/s of forward + backward + AdamW step) of openglm vs transformers.

The ~22M-parameter training benchmark GLM (hidden 384, 6 layers, 6 heads, 2 KV heads, head_dim 64,
FFN 1024, vocab 16384, untied head), batch 8 x 512, fp32 and bf16 autocast (fp32 master
weights and AdamW in both), same random weights, same run, 2 threads. openglm runs its
trainer's own step (objective + AdamW as openglm.train.Trainer builds them); transformers
runs `model(input_ids, labels=...)` + backward + AdamW. Runs alternate and the best of
`--repeats` is kept (the least noisy figure on a shared machine).

MFU = model FLOPs per token (6 x matmul params + attention, PaLM) x tokens/s / peak, where
peak is a measured 2048^3 matmul of the same precision on this machine.

    python benchmarks/bench_train.py [--threads 2] [--repeats 3] [--compile] [--dtypes bf16,fp32] [--json]
"""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import arg_parser, best_times, machine, make_pair, report  # noqa: E402

from openglm.model.glm import cpu_computes_natively  # noqa: E402
from openglm.train import TrainConfig  # noqa: E402
from openglm.train.objectives import LMObjective  # noqa: E402
from openglm.train.trainer import batch_flops, measure_peak_flops  # noqa: E402

SHAPE = {"vocab_size": 16384, "hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 6,
         "num_key_value_heads": 2, "head_dim": 64, "intermediate_size": 1024}
BATCH, SEQ = 8, 512


def _adamw(model):
    cfg = TrainConfig()
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=cfg.betas,
                             weight_decay=cfg.weight_decay, fused=True)


def make_steps(dtype: torch.dtype | None, compile_ours: bool):
    """(openglm step, transformers step) closures on identical models and data."""
    ours, hf = make_pair(torch.float32, SHAPE)
    ours.train()
    hf.train()
    engine = torch.compile(ours) if compile_ours else ours
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, SHAPE["vocab_size"], (BATCH, SEQ + 1), generator=g)
    batch = {"input_ids": ids[:, :-1], "targets": ids[:, 1:]}
    objective, opt_ours, opt_hf = LMObjective(), _adamw(ours), _adamw(hf)

    def autocast():
        return torch.autocast("cpu", dtype=dtype) if dtype is not None else nullcontext()

    def step_ours():
        with autocast():
            loss_sum, _ = objective(engine, batch)
        (loss_sum / objective.normalizer(batch)).backward()
        opt_ours.step()
        opt_ours.zero_grad(set_to_none=True)

    def step_hf():
        with autocast():
            loss = hf(input_ids=ids[:, :-1], labels=ids[:, :-1]).loss  # transformers shifts internally
        loss.backward()
        opt_hf.step()
        opt_hf.zero_grad(set_to_none=True)

    return step_ours, step_hf, ours.config


def run(threads: int, repeats: int, compile_ours: bool, dtypes: list[str]) -> dict:
    torch.set_num_threads(threads)
    results, peaks = {}, {}
    for name in dtypes:
        dtype = torch.bfloat16 if name == "bf16" else None
        peak = peaks[name] = measure_peak_flops(torch.device("cpu"), dtype or torch.float32)
        step_ours, step_hf, cfg = make_steps(dtype, compile_ours)
        times = best_times({"openglm": step_ours, "transformers": step_hf}, repeats)
        step_flops, _ = batch_flops(cfg, {"input_ids": torch.zeros(BATCH, SEQ, dtype=torch.long)})  # all targets
        row = {}
        for k, t in times.items():
            tok_s = BATCH * SEQ / t
            row[k] = {"tokens_per_s": tok_s, "mfu": step_flops / t / peak, "step_s": t}
        results[name] = row
        print(f"{name:5s} openglm {row['openglm']['tokens_per_s']:7.0f} tok/s (MFU {row['openglm']['mfu']:.0%}) | "
              f"transformers {row['transformers']['tokens_per_s']:7.0f} tok/s (MFU {row['transformers']['mfu']:.0%})")
    params = sum(p.numel() for p in make_pair(torch.float32, SHAPE)[0].parameters())
    ratio = {k: v["openglm"]["tokens_per_s"] / v["transformers"]["tokens_per_s"] for k, v in results.items()}
    return {"benchmark": "train", "machine": machine(), "params": params, "batch": [BATCH, SEQ],
            "compile": compile_ours, "peak_flops": peaks, "results": results,
            "ratio": ratio.get("bf16"), "ratio_fp32": ratio.get("fp32")}


def default_dtypes() -> list[str]:
    """bf16 and fp32; fp32 only on a CPU without native bf16 matmuls (no AVX-512), where a bf16
    step of either library runs PyTorch's scalar fallback and takes minutes."""
    if cpu_computes_natively(torch.bfloat16):
        return ["bf16", "fp32"]
    print("this CPU has no native bf16 matmul (AVX-512): timing fp32 only (--dtypes bf16,fp32 forces both)")
    return ["fp32"]


def main() -> None:
    ap = arg_parser(__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="torch.compile the openglm model (trainer option)")
    ap.add_argument("--dtypes", type=lambda s: s.split(","), default=None,
                    help="comma-separated, from bf16,fp32 (default: both where the CPU has native bf16)")
    args = ap.parse_args()
    dtypes = args.dtypes or default_dtypes()
    if not dtypes or set(dtypes) - {"bf16", "fp32"}:
        ap.error(f"--dtypes takes bf16 and/or fp32, got {','.join(dtypes)}")
    out = run(args.threads, args.repeats, args.compile, dtypes)
    ratios = "  ".join(f"{k} {out[key]:.2f}" for k, key in (("bf16", "ratio"), ("fp32", "ratio_fp32"))
                       if out[key] is not None)
    peaks = ", ".join(f"{k} {v / 1e9:.0f}" for k, v in out["peak_flops"].items())
    report(f"matmul peak (GFLOP/s) {peaks}; {out['params'] / 1e6:.1f}M params; ratio openglm/transformers {ratios}",
           out, args.json)


if __name__ == "__main__":
    main()
