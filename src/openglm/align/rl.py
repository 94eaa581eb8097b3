"""`openglm rl CONFIG`: GRPO or PPO-clip against a frozen reference, on checkable rewards.

One optimizer step: take ``prompts_per_step`` prompts, sample ``group_size`` rollouts of each
with the current policy (one batch; single turns or the real agent loop, see rollout.py),
score them (rewards.py), turn rewards into advantages within each prompt's group, and record
the rollouts' log-probs under the policy (old) and the reference; then minimise the clipped
surrogate (losses.py). ``ppo_epochs`` > 1 takes that many optimizer steps on one rollout batch.
An optional SFT loss on ``sft_data`` (``sft_coef``) holds on to what the model could do.

It runs on the shared :class:`~openglm.train.trainer.Trainer` (one process), so logging,
checkpoints and exact resume are those of every stage: the rollout batch in use and the
positions in the prompt and SFT data are part of the checkpoint, and rollouts are seeded by
their round. OUT/rl.png plots reward and KL.

Prompt data: JSONL records with ``messages`` (the prompt is everything up to the last user
message; later turns are the reference reply) and whatever the rewards read (``answer``,
``calls`` for the agent task checker); ``synth_tasks: N`` adds N training-split synthetic
agent tasks.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from openglm.agent import Limits
from openglm.infer import Sampling
from openglm.model.glm import IGNORE
from openglm.train.config import TrainConfig
from openglm.train.data import StepBatches
from openglm.train.objectives import token_logprobs, token_loss_sum
from openglm.train.sft import Example, LoadReport, collate_rows, load_conversations, read_jsonl, row_plan
from openglm.train.stages import finish_stage, frozen_reference, start_stage
from openglm.train.trainer import Trainer

from .losses import clipped_surrogate, group_advantages, ppo_rewards
from .rewards import build_rewards, resolve_reward_paths
from .rollout import collect


@dataclass
class RLConfig(TrainConfig):
    algorithm: str = "grpo"  # grpo | ppo (PPO-clip, KL as a reward penalty, group-mean baseline)
    prompts_per_step: int = 8
    group_size: int = 4  # rollouts per prompt
    rollout: str = "single"  # single (one assistant turn) | agent (the agent loop with the real tools)
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_turn_tokens: int = 128
    max_turns: int = 4  # agent mode: model turns per rollout
    beta: float = 0.04  # KL coefficient
    clip_eps: float = 0.2
    ppo_epochs: int = 1  # optimizer steps per rollout batch
    scale_advantages: bool = True  # divide by the group's std (GRPO); false: centre only
    rewards: list[dict[str, Any]] = field(default_factory=lambda: [{"type": "task"}])
    synth_tasks: int = 0  # add this many training-split synthetic agent tasks as prompts
    sft_data: list[str] = field(default_factory=list)
    sft_coef: float = 0.0  # weight of the SFT loss mixed into every step
    micro_batch_size: int = 8
    seq_len: int = 1024  # longer rollouts are cut (and counted)
    lr: float = 1e-5
    warmup_steps: int = 0
    weight_decay: float = 0.0
    eval_every: int = 0
    save_every: int = 10
    STAGE = "rl"

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, allowed in {"algorithm": ("grpo", "ppo"), "rollout": ("single", "agent")}.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}; choose one of {', '.join(allowed)}")
        for name in ("prompts_per_step", "group_size", "max_turn_tokens", "max_turns", "ppo_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.group_size < 2:
            raise ValueError("group_size must be >= 2: advantages compare the rollouts of one prompt")

    @classmethod
    def from_yaml(cls, path=None, overrides=None):
        """As every stage, plus: file paths in ``rewards`` entries are relative to the config's folder."""
        cfg = super().from_yaml(path, overrides)
        if path is not None and "rewards" not in (overrides or {}):
            base = Path(os.path.abspath(path)).parent
            cfg.rewards = [resolve_reward_paths(e, base) for e in cfg.rewards]
        return cfg


def load_prompts(paths: list[str], synth_tasks: int, seed: int) -> tuple[list[dict], LoadReport]:
    """Prompt records ``{"prompt": [...], **the record's other keys}`` (see module docstring)."""
    report, records = LoadReport(), []
    for path in paths:
        for where, record in read_jsonl(path, report, skip_invalid=False):
            messages = record.get("messages")
            users = [i for i, m in enumerate(messages or []) if isinstance(m, dict) and m.get("role") == "user"]
            if not users:
                raise ValueError(f"{where}: expected 'messages' with a user message (keys: {sorted(record)})")
            records.append({**record, "prompt": messages[:users[-1] + 1]})
            report.kept += 1
    if synth_tasks:
        from openglm.data.synth import generate_tasks

        for t in generate_tasks(synth_tasks, seed=seed, split="train"):
            records.append({"prompt": t.prompt, "answer": t.answer, "calls": t.calls, "kind": t.kind})
    if not records:
        raise ValueError("no prompts: set train_data (JSONL with messages) or synth_tasks")
    return records, report


def _example(ids: list[int], generated: list[bool], seq_len: int) -> Example:
    """Targets where the next token is one the policy wrote."""
    ids, generated = ids[:seq_len], generated[:seq_len]
    arr = np.asarray(ids, dtype=np.int64)
    targets = np.full(len(ids), IGNORE, dtype=np.int64)
    nxt = np.asarray(generated[1:], dtype=bool)
    targets[:-1][nxt] = arr[1:][nxt]
    return Example(arr, targets)


class RolloutBatches:
    """The Trainer's data source in RL: each ``next()`` is one step's micro-batches of rollouts."""

    def __init__(self, cfg: RLConfig, policy, reference, tok, records: list[dict], rewards, autocast,
                 python=None, sft: StepBatches | None = None):
        self.cfg, self.policy, self.reference, self.tok = cfg, policy, reference, tok
        self.records, self.rewards, self.autocast, self.python, self.sft = records, rewards, autocast, python, sft
        self.round = 0  # rollout batches made so far
        self.served = 0  # optimizer steps taken on the current batch
        self.batch: list[dict] | None = None
        self.stats: dict[str, float] = {}

    def prompts(self, round_: int) -> list[dict]:
        """This round's prompts: a seeded permutation per pass over the data."""
        n, k = len(self.records), self.cfg.prompts_per_step
        orders: dict[int, np.ndarray] = {}  # one permutation per pass the round touches
        out = []
        for j in range(round_ * k, round_ * k + k):
            epoch, i = divmod(j, n)
            if epoch not in orders:
                orders[epoch] = np.random.default_rng([self.cfg.seed, epoch]).permutation(n)
            out.append(self.records[int(orders[epoch][i])])
        return out

    def next(self) -> list[dict]:
        if self.batch is None or self.served == self.cfg.ppo_epochs:
            self.batch, self.stats = self._make_batch()
            self.round += 1
            self.served = 0
        self.served += 1
        micro = [dict(mb) for mb in self.batch]
        if self.sft is not None:
            sft = self.sft.next()[0]
            micro[0].update({f"sft_{k}": v for k, v in sft.items()})
            micro[0]["step_rows"] = torch.tensor(float(sum(len(mb["rewards"]) for mb in micro)), dtype=torch.float64)
        return micro

    def report(self) -> dict[str, float]:
        return dict(self.stats)

    @torch.no_grad()
    def _logps(self, model, mb: dict) -> torch.Tensor:
        with self.autocast():
            return token_logprobs(model, mb).float()

    def _make_batch(self) -> tuple[list[dict], dict[str, float]]:
        cfg, t0 = self.cfg, time.perf_counter()
        sampling = Sampling(cfg.temperature, cfg.top_k, cfg.top_p, 1.0, seed=cfg.seed * 7919 + self.round)
        limits = Limits(max_steps=cfg.max_turns, max_turn_tokens=cfg.max_turn_tokens, max_seconds=300)
        device = self.policy.final_norm.weight.device
        self.policy.eval()
        if device.type == "cpu":
            self.policy.pack_weights()  # fresh packed copies: the optimizer updated the weights in place
        rollouts = collect(self.policy, self.tok, self.prompts(self.round), cfg.group_size, sampling,
                           mode=cfg.rollout, limits=limits, python=self.python)
        self.policy.train()
        seconds = time.perf_counter() - t0
        samples = [r.sample for r in rollouts]
        rewards, parts = self.rewards(samples)
        examples = [_example(r.ids, r.generated, cfg.seq_len) for r in rollouts]
        batch = []
        for s in range(0, len(examples), cfg.micro_batch_size):
            part = range(s, min(s + cfg.micro_batch_size, len(examples)))
            mb = collate_rows([[examples[i]] for i in part], self.tok.pad_id)
            on = {k: v.to(device) for k, v in mb.items()}
            if cfg.ppo_epochs > 1 or cfg.algorithm == "ppo":  # else the update's own log-probs are the old ones
                mb["old_logps"] = self._logps(self.policy, on).cpu()
            mb["ref_logps"] = self._logps(self.reference, on).cpu()
            mb["rewards"] = torch.tensor([rewards[i] for i in part], dtype=torch.float64)
            mb["groups"] = torch.tensor([rollouts[i].group for i in part])
            mb["row_weight"] = torch.ones(len(part), dtype=torch.float64)
            batch.append(mb)
        self._advantages(batch)
        generated = sum(s.reply_tokens for s in samples)
        r = np.asarray(rewards)
        stats = {"reward": float(r.mean()), "reward_std": float(r.std()),
                 **{f"reward/{k}": float(np.mean(v)) for k, v in parts.items()},
                 "reply_tokens": generated / len(samples), "rollout_s": seconds,
                 "rollout_tokens_per_s": generated / seconds,
                 "restarts": float(sum(r.restarts for r in rollouts)),
                 "truncated": float(sum(len(r.ids) > cfg.seq_len for r in rollouts))}
        return batch, stats

    def _advantages(self, batch: list[dict]) -> None:
        """Advantages within each prompt's group, over the whole rollout batch."""
        cat = lambda k: torch.cat([mb[k] for mb in batch])  # noqa: E731
        rewards = cat("rewards")
        if self.cfg.algorithm == "ppo":
            shaped = [ppo_rewards(mb["rewards"], mb["old_logps"], mb["ref_logps"], mb["targets"] != IGNORE,
                                  self.cfg.beta) for mb in batch]
            rewards = torch.cat(shaped)
        adv = group_advantages(rewards, cat("groups"), self.cfg.scale_advantages)
        at = 0
        for mb in batch:
            n = len(mb["rewards"])
            mb["advantages"], at = adv[at:at + n], at + n

    def state_dict(self) -> dict:
        return {"round": self.round, "served": self.served, "batch": self.batch, "stats": self.stats,
                "sft": self.sft.state_dict() if self.sft else None}

    def load_state_dict(self, state: dict) -> None:
        self.round, self.served = state["round"], state["served"]
        self.batch, self.stats = state["batch"], state["stats"]
        if self.sft is not None and state["sft"] is not None:
            self.sft.load_state_dict(state["sft"])


class PolicyObjective:
    """The clipped surrogate (+ the GRPO KL term, + the SFT mix); sums over rollouts."""

    def __init__(self, cfg: RLConfig):
        self.cfg = cfg

    def normalizer(self, batch: dict) -> torch.Tensor:
        return batch["row_weight"].sum()

    def __call__(self, model, batch: dict) -> tuple[torch.Tensor, dict]:
        cfg = self.cfg
        logp, entropy = token_logprobs(model, batch, entropy=True)
        mask = batch["targets"] != IGNORE
        beta = cfg.beta if cfg.algorithm == "grpo" else 0.0
        old = batch["old_logps"] if "old_logps" in batch else logp.detach()
        losses, stats = clipped_surrogate(logp, old, batch["advantages"], mask, cfg.clip_eps, beta, batch["ref_logps"])
        w = batch["row_weight"]
        per_row = lambda v: ((v * mask).sum(-1) / mask.sum(-1).clamp(min=1))  # noqa: E731
        metrics = {"kl": (stats["kl"] * w).sum(), "clip_frac": (stats["clip_frac"] * w).sum(),
                   "entropy": (per_row(entropy) * w).sum()}
        loss = (losses * w).sum()
        if "sft_input_ids" in batch:
            sft = {k[4:]: v for k, v in batch.items() if k.startswith("sft_")}
            mean_nll = token_loss_sum(model, sft) / sft["loss_weights"].sum().clamp(min=1)
            # the trainer divides by the step's rollouts: times step_rows makes this cfg.sft_coef x mean NLL
            loss = loss + cfg.sft_coef * mean_nll * batch["step_rows"]
            metrics["sft_loss"] = mean_nll.detach() * batch["step_rows"]
        return loss, metrics


def run_rl(cfg: RLConfig) -> dict:
    """RL from cfg.model (see the module docstring); returns the last step's record."""
    info, tok, model = start_stage(cfg)
    if info.world > 1:
        raise ValueError("rl runs in one process (rollouts and updates on one device); launch it without torchrun")
    records, report = load_prompts(cfg.train_data, cfg.synth_tasks, cfg.seed)
    rewards = build_rewards(cfg.rewards)
    print(f"rl prompts: {len(records)} ({report.kept} from files, {cfg.synth_tasks} synthetic); "
          f"{cfg.prompts_per_step} x {cfg.group_size} rollouts per step ({cfg.rollout}); "
          f"rewards: {', '.join(name for name, _, _ in rewards.terms)}")
    sft = None
    if cfg.sft_data and cfg.sft_coef:
        examples, sft_report = load_conversations(cfg.sft_data, tok, cfg.seq_len)
        print(f"sft mix: {sft_report.summary()}")
        plan = row_plan([len(e) for e in examples], cfg.seq_len, cfg.micro_batch_size, cfg.seed, True, False)
        sft = StepBatches(plan, lambda rows: collate_rows(
            [[examples[i] for i in r] if r is not None else None for r in rows], tok.pad_id), cfg.micro_batch_size)
    reference = frozen_reference(cfg, model, info)
    if info.device.type == "cpu" and isinstance(reference, torch.nn.Module):
        # rollouts and log-prob passes run without autograd: the CPU inference paths serve them (the
        # policy's too, re-packed every round); under autograd a model computes as glm.py says
        reference.for_inference()
    with tempfile.TemporaryDirectory() as workdir, _python_tool(records, cfg, workdir) as python:
        loader = RolloutBatches(cfg, model, reference, tok, records, rewards, lambda: trainer.autocast(), python, sft)
        trainer = Trainer(cfg, model, PolicyObjective(cfg), loader, None, info)
        result = trainer.fit()
    if info.is_main:
        plot_rl(trainer.history, Path(cfg.out_dir) / "rl.png")
    finish_stage(trainer, tok, cfg)
    return result


def _python_tool(records: list[dict], cfg: RLConfig, workdir: str):
    """One sandboxed kernel for every rollout (calls run one at a time), when any prompt offers python."""
    from openglm.agent.tools import PythonTool

    from .rollout import prompt_tools

    wanted = cfg.rollout == "agent" and any(t.get("type") == "python" for r in records for t in prompt_tools(r))
    return PythonTool(workdir) if wanted else contextlib.nullcontext()


def plot_rl(history: list[dict], path: Path) -> Path | None:
    """rl.png: mean reward and KL to the reference against step."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    for ax, key in ((top, "reward"), (bottom, "kl")):
        pts = [(r["step"], r[key]) for r in history if key in r]
        if pts:
            ax.plot(*zip(*pts))
        ax.set_ylabel(key)
    bottom.set_xlabel("step")
    top.set_title("RL: mean reward and KL to the reference")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
