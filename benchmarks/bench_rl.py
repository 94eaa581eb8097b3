"""GRPO on the shipped nano model: openglm's RL stage (`run_rl`) against TRL's `GRPOTrainer`.

Same checkpoint (the embedded 5.9M-parameter GLM-4 model, fp32, CPU), same P prompts (rendered
by openglm's chat template; TRL gets the rendered text, checked to tokenize to the same ids),
P x G rollouts per optimizer step, one turn of at most `--max-new-tokens` tokens each, sampling
at temperature 1 (no top-k/top-p), the same stop ids, the reward 1 if the reply contains "?",
beta 0.04 (k3 KL to a frozen reference), clip 0.2, the "grpo" loss (token mean per sequence, then
mean), one micro-batch of P x G rows, grad clip 1, AdamW. Each run takes one warm-up step and
then `--steps` timed steps; contenders alternate over `--rounds`; each keeps its best step (the
least noisy figure on a shared machine; medians are printed and in the JSON too).

- rollout tokens/s: generated tokens (stop token included) / rollout wall time. openglm: the
  log's `rollout_tokens_per_s` (pack weights + `collect`: chat encoding, `generate_ids`, parsing);
  TRL: its `_generate` timed by a wrapper (tokenize, `model.generate`, decode).
- step time (the update): the whole optimizer step less the rollout time, i.e. reward, old/ref
  log-prob passes, forward + backward and AdamW. openglm: `step_time - rollout_s`; TRL: callback
  time from `on_step_begin` to `on_step_end` less `_generate`.

    python benchmarks/bench_rl.py [--prompts 8] [--group 4] [--max-new-tokens 64] [--steps 2] [--rounds 3] [--json]
"""

from __future__ import annotations

import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import alternating, arg_parser, report  # noqa: E402

from openglm import load_tokenizer  # noqa: E402
from openglm.align.rl import RLConfig, run_rl  # noqa: E402
from openglm.embedded import EMBEDDED_DIR  # noqa: E402

QUESTIONS = ["Tell me about the weather.", "What is your name?", "Say hello.", "Give me a tip for studying.",
             "你好", "介绍一下你自己", "What can you do?", "写一句话。", "How do I boil an egg?",
             "Name three colours.", "今天星期几？", "Explain what a tool call is.", "What is 12 times 7?",
             "推荐一本书。", "Write a short greeting for a friend.", "What time is it in Paris?"]
BETA, CLIP, LR, SEED = 0.04, 0.2, 1e-6, 0


def questions(n: int) -> list[str]:
    return [QUESTIONS[i % len(QUESTIONS)] + (f" ({i // len(QUESTIONS) + 1})" if i >= len(QUESTIONS) else "")
            for i in range(n)]


def cpu_name() -> str:
    """The model name of /proc/cpuinfo and its widest AVX."""
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    name = next((x.split(":", 1)[1].strip() for x in lines if x.startswith("model name")), "unknown CPU")
    flags = set(next((x.split(":", 1)[1].split() for x in lines if x.startswith("flags")), []))
    return f"{name} ({'AVX-512' if 'avx512f' in flags else 'AVX2' if 'avx2' in flags else 'no AVX2'})"


def run_ours(prompts: list[str], group: int, max_new: int, steps: int) -> dict:
    """run_rl for 1 + steps steps; figures from its log.jsonl, the warm-up step dropped."""
    with tempfile.TemporaryDirectory() as d:
        data = Path(d) / "prompts.jsonl"
        data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q}]}) + "\n" for q in prompts))
        cfg = RLConfig.from_dict({
            "model": str(EMBEDDED_DIR), "tokenizer": str(EMBEDDED_DIR), "train_data": [str(data)],
            "rewards": [{"type": "contains", "text": "?"}], "prompts_per_step": len(prompts), "group_size": group,
            "max_turn_tokens": max_new, "temperature": 1.0, "beta": BETA, "clip_eps": CLIP, "lr": LR,
            "max_steps": 1 + steps, "micro_batch_size": len(prompts) * group, "seq_len": 1024, "precision": "fp32",
            "device": "cpu", "out_dir": str(Path(d) / "run"), "seed": SEED, "save_every": 0, "log_every": 1,
            "tensorboard": False, "progress": False, "peak_flops": 1e11})
        run_rl(cfg)
        log = [json.loads(line) for line in (Path(d) / "run" / "log.jsonl").read_text().splitlines()][1:]
    return {"rollout_tokens_per_s": [r["rollout_tokens_per_s"] for r in log],
            "step_s": [r["step_time"] - r["rollout_s"] for r in log],
            "reply_tokens": [r["reply_tokens"] for r in log], "reward": [r["reward"] for r in log]}


def run_trl(texts: list[str], group: int, max_new: int, steps: int) -> dict:
    """GRPOTrainer for 1 + steps steps on the transformers model; generation timed by a wrapper."""
    from datasets import Dataset
    from transformers import AutoTokenizer, GlmForCausalLM, PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    def has_question_mark(prompts, completions, **kwargs):
        return [float("?" in c) for c in completions]

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            steps_s.append(time.perf_counter() - self.t0)

    steps_s, gen_s, gen_tokens = [], [], []
    n = len(texts) * group
    model = GlmForCausalLM.from_pretrained(EMBEDDED_DIR, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(EMBEDDED_DIR)
    with tempfile.TemporaryDirectory() as d:
        args = GRPOConfig(
            output_dir=d, per_device_train_batch_size=n, num_generations=group, generation_batch_size=n,
            gradient_accumulation_steps=1, max_completion_length=max_new, max_steps=1 + steps, learning_rate=LR,
            lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, adam_beta2=0.95, max_grad_norm=1.0,
            beta=BETA, epsilon=CLIP, loss_type="grpo", scale_rewards="group", temperature=1.0, top_p=1.0, top_k=0,
            use_vllm=False, use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False, report_to="none",
            logging_steps=1, save_strategy="no", disable_tqdm=True, seed=SEED, dataloader_num_workers=0)
        trainer = GRPOTrainer(model=model, reward_funcs=[has_question_mark], args=args, processing_class=tok,
                              train_dataset=Dataset.from_dict({"prompt": texts}), callbacks=[StepTimer()])
        trainer.remove_callback(PrinterCallback)
        generate = trainer._generate

        def timed_generate(prompts):
            t0 = time.perf_counter()
            out = generate(prompts)
            gen_s.append(time.perf_counter() - t0)
            gen_tokens.append(sum(len(ids) for ids in out[1]))
            return out

        trainer._generate = timed_generate
        trainer.train()
        rewards = [r["reward"] for r in trainer.state.log_history if "reward" in r][1:]
    assert len(steps_s) == len(gen_s) == 1 + steps, (len(steps_s), len(gen_s))
    steps_s, gen_s, gen_tokens = steps_s[1:], gen_s[1:], gen_tokens[1:]
    return {"rollout_tokens_per_s": [t / g for t, g in zip(gen_tokens, gen_s)],
            "step_s": [s - g for s, g in zip(steps_s, gen_s)], "reply_tokens": [t / n for t in gen_tokens],
            "reward": rewards}


def rendered_prompts(prompts: list[str]) -> list[str]:
    """openglm's chat rendering as text, checked to tokenize to the same ids in transformers."""
    from transformers import AutoTokenizer

    tok, hf = load_tokenizer(EMBEDDED_DIR), AutoTokenizer.from_pretrained(EMBEDDED_DIR)
    texts = []
    for q in prompts:
        ids = tok.encode_chat([{"role": "user", "content": q}])
        text = tok.decode(ids)
        if hf(text)["input_ids"] != ids:
            raise SystemExit(f"the prompt {q!r} tokenizes differently in transformers: no like-for-like comparison")
        texts.append(text)
    return texts


def run(threads: int, n_prompts: int, group: int, max_new: int, steps: int, rounds: int) -> dict:
    torch.set_num_threads(threads)
    prompts = questions(n_prompts)
    texts = rendered_prompts(prompts)
    load_before = os.getloadavg()

    def contender(fn, arg):
        def measure():
            torch.set_num_threads(threads)
            load = os.getloadavg()[0]
            return {**fn(arg, group, max_new, steps), "load_1min": [round(load, 2), round(os.getloadavg()[0], 2)]}
        return measure

    figures = alternating({"openglm": contender(run_ours, prompts), "trl": contender(run_trl, texts)}, rounds)
    summary = {}
    for name, runs in figures.items():
        every = {k: [x for r in runs for x in r[k]] for k in ("rollout_tokens_per_s", "step_s", "reply_tokens")}
        summary[name] = {"rollout_tokens_per_s": max(every["rollout_tokens_per_s"]),
                         "step_s": min(every["step_s"]), "reply_tokens": statistics.mean(every["reply_tokens"]),
                         "median_rollout_tokens_per_s": statistics.median(every["rollout_tokens_per_s"]),
                         "median_step_s": statistics.median(every["step_s"])}
    ours, anchor = summary["openglm"], summary["trl"]
    import transformers
    import trl

    return {"benchmark": "rl", "machine": f"{cpu_name()}, {os.cpu_count()} cores", "threads": threads,
            "date": datetime.date.today().isoformat(), "torch": torch.__version__,
            "transformers": transformers.__version__, "trl": trl.__version__,
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "P": n_prompts, "G": group, "max_new_tokens": max_new, "steps": steps, "rounds": rounds,
            "runs": figures,
            **{f"ours_{k}": v for k, v in ours.items()}, "anchor": "trl.GRPOTrainer",
            **{f"anchor_{k}": v for k, v in anchor.items()},
            "ratio": ours["rollout_tokens_per_s"] / anchor["rollout_tokens_per_s"],
            "ratio_step": anchor["step_s"] / ours["step_s"]}


def main() -> None:
    ap = arg_parser(__doc__, rounds=3)
    ap.add_argument("--prompts", type=int, default=8, help="prompts per step (P)")
    ap.add_argument("--group", type=int, default=4, help="rollouts per prompt (G)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per run, after one warm-up step")
    args = ap.parse_args()
    if args.group < 2 or args.prompts < 1 or args.steps < 1:
        ap.error("--group must be >= 2, --prompts and --steps >= 1")
    t0 = time.time()
    out = run(args.threads, args.prompts, args.group, args.max_new_tokens, args.steps, args.rounds)
    rows = [("openglm run_rl", "ours"), ("TRL GRPOTrainer", "anchor")]
    fig = lambda k, name, f: f"{out[f'{k}_{name}']:{f}} ({out[f'{k}_median_{name}']:{f}})"  # noqa: E731
    table = "\n".join(f"{name:16s} | {fig(k, 'rollout_tokens_per_s', '6.1f')} | {fig(k, 'step_s', '5.2f')} | "
                      f"{out[k + '_reply_tokens']:.1f}" for name, k in rows)
    head = f"best (median) of {out['rounds'] * out['steps']} steps | rollout tokens/s | update s/step | reply tokens"
    report(f"{out['machine']}, {out['threads']} threads, load {out['loadavg_before'][0]:.2f} -> "
           f"{out['loadavg_after'][0]:.2f}; P x G = {out['P']} x {out['G']}, <= {out['max_new_tokens']} new tokens\n"
           f"{head}\n{table}\n"
           f"ratio (rollout tokens/s) {out['ratio']:.2f}  ratio_step (TRL / ours) {out['ratio_step']:.2f}  "
           f"({time.time() - t0:.0f} s)", out, args.json)


if __name__ == "__main__":
    main()
