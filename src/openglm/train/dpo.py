"""Direct preference optimisation (Rafailov et al. 2023), the preference stage of ChatGLM-RLHF.

Data: JSONL, one pair per line::

    {"messages": [...prompt, official format...], "chosen": REPLY, "rejected": REPLY,
     "tools": [...]?, "ref_chosen_logp": float?, "ref_rejected_logp": float?}

A REPLY is an assistant message dict, a list of messages (e.g. a tool call, its
observation and the final answer), or a plain string (assistant content). The log-prob of a
reply is the sum over its assistant targets (labelled as in SFT); prompt tokens never count.

loss = -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))) per pair, averaged over pairs.
Reported: rewards/chosen = beta * (pi_c - ref_c), rewards/rejected, margin (their difference)
and accuracy (share of pairs whose chosen reward is higher).

The reference log-probs come from the data when every pair has them, else from the
starting policy: computed once before training (``reference: precompute``) or by a frozen
copy at every step (``reference: model``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..chat import normalize_messages, render_segments
from .objectives import token_logprobs
from .sft import Example, LoadReport, _reject, collate_rows, encode_conversation, read_jsonl


def _reply_messages(reply, where: str) -> list:
    if isinstance(reply, str):
        return [{"role": "assistant", "content": reply}]
    if isinstance(reply, dict):
        return [reply]
    if isinstance(reply, list) and reply:
        return reply
    raise ValueError(f"{where}: expected an assistant message, a list of messages or a string")


def encode_pair(tokenizer, record: dict, where: str = "pair") -> tuple[Example, Example]:
    """(chosen, rejected) examples whose targets cover only the reply."""
    for key in ("messages", "chosen", "rejected"):
        if key not in record:
            raise ValueError(f"{where}: missing {key!r} (keys: {sorted(record)})")
    prompt = normalize_messages(record["messages"])
    tools = record.get("tools")
    prompt_ids = tokenizer.encode_segments(render_segments(prompt, tools=tools, add_generation_prompt=False))
    out = []
    for key in ("chosen", "rejected"):
        reply = normalize_messages(_reply_messages(record[key], f"{where}.{key}"))
        out.append(encode_conversation(tokenizer, prompt + reply, tools, train_from=len(prompt_ids)))
    return out[0], out[1]


class PreferencePairs:
    """Encoded pairs plus their reference log-probs ([N, 2], NaN until known)."""

    def __init__(self, pairs: list[tuple[Example, Example]], ref_logps: np.ndarray, pad_id: int):
        self.pairs, self.ref_logps, self.pad_id = pairs, ref_logps, pad_id

    @classmethod
    def load(cls, paths: Sequence[str | Path], tokenizer, seq_len: int, skip_invalid: bool = False):
        report, pairs, refs = LoadReport(), [], []
        for path in paths:
            for where, record in read_jsonl(path, report, skip_invalid):
                try:
                    chosen, rejected = encode_pair(tokenizer, record, where)
                except (ValueError, KeyError, TypeError) as e:
                    _reject(report, f"{where}: {e}", skip_invalid)
                    continue
                if max(len(chosen), len(rejected)) > seq_len:
                    report.truncated += 1
                    chosen, rejected = _truncate(chosen, seq_len), _truncate(rejected, seq_len)
                if chosen.n_targets == 0 or rejected.n_targets == 0:
                    report.no_targets += 1
                    continue
                report.kept += 1
                pairs.append((chosen, rejected))
                refs.append([record.get("ref_chosen_logp", np.nan), record.get("ref_rejected_logp", np.nan)])
        if not pairs:
            raise ValueError(f"no usable preference pairs in {', '.join(map(str, paths))}: {report.summary()}")
        return cls(pairs, np.asarray(refs, dtype=np.float64), tokenizer.pad_id), report

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def has_reference(self) -> bool:
        return not np.isnan(self.ref_logps).any()

    def plan(self, global_batch: int, seed: int):
        def epoch_plan(epoch: int) -> list[list[int]]:
            order = np.random.default_rng([seed, epoch]).permutation(len(self)).tolist()
            return [order[i:i + global_batch] for i in range(0, len(order), global_batch)]
        return epoch_plan

    def collate(self, items: list[int | None]) -> dict:
        """Chosen rows first, then rejected rows; None items are zero-weight fillers."""
        chosen = [[self.pairs[i][0]] if i is not None else None for i in items]
        rejected = [[self.pairs[i][1]] if i is not None else None for i in items]
        batch = collate_rows(chosen + rejected, self.pad_id)
        real = [i is not None for i in items]
        batch["pair_weight"] = torch.tensor(real, dtype=torch.float64)
        batch["pair_index"] = torch.tensor([i if i is not None else -1 for i in items])
        refs = [self.ref_logps[i] if i is not None else (0.0, 0.0) for i in items]
        batch["ref_logps"] = torch.tensor(np.asarray(refs, dtype=np.float64).reshape(len(items), 2))
        return batch

    @torch.no_grad()
    def precompute_reference(self, model, autocast: Callable, batch_size: int, device, progress=None,
                             only: Sequence[int] | None = None) -> int:
        """Fill missing reference log-probs with ``model`` (the starting policy), for the pairs in
        ``only`` (default: all; a run of N steps reads only the pairs its plan visits). Every
        process computes the same pairs, so all of them run the same forward passes (FSDP).
        Returns how many pairs it computed."""
        wanted = range(len(self)) if only is None else sorted(set(only))
        todo = [i for i in wanted if np.isnan(self.ref_logps[i]).any()]
        was_training = model.training
        model.eval()
        for start in range(0, len(todo), batch_size):
            items = todo[start:start + batch_size]
            batch = {k: v.to(device) for k, v in self.collate(items).items()}
            with autocast():
                logps = sequence_logprobs(model, batch).double().cpu()
            self.ref_logps[items] = logps.view(2, -1).T.numpy()
            if progress:
                progress(len(items))
        model.train(was_training)
        return len(todo)


def _truncate(ex: Example, seq_len: int) -> Example:
    if len(ex) <= seq_len:
        return ex
    return Example(ex.ids[:seq_len], np.append(ex.targets[:seq_len - 1], -100))


def sequence_logprobs(model, batch: dict) -> torch.Tensor:
    """Sum of target log-probs per row [rows]."""
    return token_logprobs(model, batch).sum(-1)


def dpo_loss(policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float):
    """policy_logps [2B] (chosen rows then rejected), ref_logps [B, 2] -> per-pair losses and
    rewards (chosen, rejected)."""
    B = ref_logps.shape[0]
    pi_c, pi_r = policy_logps[:B].double(), policy_logps[B:].double()
    reward_c = beta * (pi_c - ref_logps[:, 0])
    reward_r = beta * (pi_r - ref_logps[:, 1])
    return -F.logsigmoid(reward_c - reward_r), reward_c.detach(), reward_r.detach()


class DPOObjective:
    """The DPO loss summed over pairs; normalised by the number of pairs in the step.

    ``reference``: None (use ``batch["ref_logps"]``) or a model whose log-probs are computed
    under no_grad at every step.
    """

    def __init__(self, beta: float, reference=None):
        self.beta, self.reference = beta, reference

    def normalizer(self, batch: dict) -> torch.Tensor:
        return batch["pair_weight"].sum()

    def __call__(self, model, batch: dict) -> tuple[torch.Tensor, dict]:
        ref = batch["ref_logps"]
        if self.reference is None and torch.isnan(ref).any():
            raise RuntimeError(f"pairs {batch['pair_index'][torch.isnan(ref).any(-1)].tolist()} have no reference "
                               "log-probs: precompute them or pass a reference model")
        if self.reference is not None:
            with torch.no_grad():
                ref = sequence_logprobs(self.reference, batch).double().view(2, -1).T
        losses, reward_c, reward_r = dpo_loss(sequence_logprobs(model, batch), ref, self.beta)
        w = batch["pair_weight"]
        return (losses * w).sum(), reward_metrics(reward_c, reward_r, w)


def reward_metrics(reward_c: torch.Tensor, reward_r: torch.Tensor, w: torch.Tensor) -> dict[str, torch.Tensor]:
    """Sums over pairs, weighted by w (0 for fillers), of the rewards of the chosen and rejected
    replies, their margin and whether chosen won (the trainer divides by the number of pairs)."""
    reward_c, reward_r = reward_c.detach(), reward_r.detach()
    return {"rewards/chosen": (reward_c * w).sum(), "rewards/rejected": (reward_r * w).sum(),
            "rewards/margin": ((reward_c - reward_r) * w).sum(),
            "rewards/accuracy": ((reward_c > reward_r).double() * w).sum()}
