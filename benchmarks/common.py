"""Shared by the benchmarks: the ~123M-parameter GLM of the issues, built in both openglm and
transformers with the same random weights."""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

import torch

BENCH_SHAPE = {"vocab_size": 32768, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
               "num_key_value_heads": 2, "head_dim": 64, "intermediate_size": 2048}


def make_pair(dtype: torch.dtype, shape: dict | None = None):
    """(openglm model, transformers GlmForCausalLM) with identical random weights, eval mode."""
    from transformers import GlmConfig, GlmForCausalLM

    from openglm.io import load_model

    cfg = GlmConfig(**(shape or BENCH_SHAPE), max_position_embeddings=4096, pad_token_id=0, eos_token_id=[1],
                    attention_bias=True, rms_norm_eps=1.5625e-7)
    torch.manual_seed(0)
    hf = GlmForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() == 1:
                p.normal_(0, 0.02)  # random biases too, so nothing is trivially zero
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        ours = load_model(d, dtype=dtype).eval()
    return ours, hf.to(dtype)


def best_time(fn, repeats: int = 3, warmup: int = 1) -> float:
    """Minimum wall time of fn() over `repeats` runs: the least noisy figure on a shared machine."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def alternating(measures: dict, rounds: int) -> dict[str, list]:
    """Each measure() once per round, the contenders in turn, so that a slow spell of a shared
    machine does not land on one contender only: {name: [one figure per round]}."""
    figures = {name: [] for name in measures}
    for _ in range(rounds):
        for name, measure in measures.items():
            figures[name].append(measure())
    return figures


def best_times(fns: dict, rounds: int = 5) -> dict:
    """The minimum wall time of each fn over alternating rounds (after one warm-up call each)."""
    for fn in fns.values():
        fn()
    timed = {name: lambda fn=fn: best_time(fn, repeats=1, warmup=0) for name, fn in fns.items()}
    return {name: min(times) for name, times in alternating(timed, rounds).items()}


def best_rates(measures: dict, rounds: int) -> dict:
    """The highest figure (a rate) of each measure over alternating rounds."""
    return {name: max(figures) for name, figures in alternating(measures, rounds).items()}


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def arg_parser(doc: str, rounds: int | None = None, llama_cpp: bool = False) -> argparse.ArgumentParser:
    """The options every model benchmark has: --threads and --json; --rounds (alternating rounds,
    see `alternating`) when given its default; --llama-cpp (see llamacpp.py) if asked."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    if rounds is not None:
        ap.add_argument("--rounds", type=int, default=rounds, help="alternating rounds; each contender's best counts")
    if llama_cpp:
        ap.add_argument("--llama-cpp", metavar="DIR", help="also time llama.cpp: a source tree with llama-bench built")
    return ap


def report(summary: str, out: dict, as_json: bool) -> None:
    """Print the human summary, then (with --json) the result as the last line."""
    print(summary)
    if as_json:
        print(json.dumps(out))
