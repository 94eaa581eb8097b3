"""A multi-turn conversation's wall time with and without reuse of the prompt's KV cache.

Same ~123M GLM as bench_forward, fp32, 2 threads, greedy. Each turn's prompt is the previous
prompt, the 32 tokens generated for it and a new 96-token message (a chat or agent turn), over
--turns turns, starting from a 512-token system prompt (tools and instructions). openglm runs
with a PromptCache (only each turn's new tokens are prefilled) and without one; transformers'
generate prefills the whole conversation every turn. Contenders alternate over --rounds and
each one's best total counts.

    python benchmarks/bench_prompt_reuse.py [--threads 2] [--turns 8] [--rounds 2] [--json]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import arg_parser, best_times, machine, make_pair, report  # noqa: E402

from openglm.infer import PromptCache, Sampling, generate_ids  # noqa: E402

SYSTEM, MESSAGE, REPLY = 512, 96, 32


def conversation(turns: int) -> list[list[int]]:
    """The new tokens of each turn: the system prompt plus a message, then one message a turn."""
    g = torch.Generator().manual_seed(0)
    return [torch.randint(3, 32768, (SYSTEM + MESSAGE if t == 0 else MESSAGE,), generator=g).tolist()
            for t in range(turns)]


def ours(model, messages, reuse: bool):
    def run():
        cache = PromptCache() if reuse else None
        prompt: list[int] = []
        for new in messages:
            prompt += new
            prompt += [t for (t,) in generate_ids(model, [prompt], REPLY, Sampling(), stop_ids=(), prompt_cache=cache)]
    return run


def transformers(model, messages):
    def run():
        prompt: list[int] = []
        for new in messages:
            ids = torch.tensor([prompt + new])
            out = model.generate(ids, max_new_tokens=REPLY, min_new_tokens=REPLY, do_sample=False,
                                 eos_token_id=None, pad_token_id=0)
            prompt = out[0].tolist()
    return run


def run(threads: int, turns: int, rounds: int) -> dict:
    torch.set_num_threads(threads)
    model, hf = make_pair(torch.float32)
    model.pack_weights()
    messages = conversation(turns)
    with torch.inference_mode():
        times = best_times({"reuse": ours(model, messages, True), "no_reuse": ours(model, messages, False),
                            "transformers": transformers(hf, messages)}, rounds)
    total = SYSTEM + turns * (MESSAGE + REPLY)
    for name, t in times.items():
        print(f"{name:12s} {t:6.1f} s for {turns} turns ({total} tokens at the end)")
    return {"benchmark": "prompt_reuse", "machine": machine(), "turns": turns, "seconds": times,
            "ratio": times["transformers"] / times["reuse"],
            "ratio_no_reuse": times["transformers"] / times["no_reuse"]}


def main() -> None:
    ap = arg_parser(__doc__, rounds=2)
    ap.add_argument("--turns", type=int, default=8)
    args = ap.parse_args()
    out = run(args.threads, args.turns, args.rounds)
    report(f"ratio (transformers time / openglm time) with reuse {out['ratio']:.2f}, "
           f"without {out['ratio_no_reuse']:.2f}", out, args.json)


if __name__ == "__main__":
    main()
