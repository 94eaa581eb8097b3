"""Policy-gradient losses for RL on sampled replies: GRPO and PPO-clip, both without a critic.

Each prompt is answered G times (a group). Rewards become advantages within the group, which
is ChatGLM-RLHF's reward normalisation per prompt: a prompt that is easy for every sample adds
no push, and the length or style bias a prompt carries cancels out.

- GRPO (Shao et al. 2024): A = (r - mean_group) / (std_group + eps), the clipped surrogate per
  token, plus beta * KL(policy || reference) per token with Schulman's k3 estimator
  (exp(ref - logp) - (ref - logp) - 1: unbiased and never negative).
- PPO-clip as InstructGPT and ChatGLM-RLHF use it: the KL to the reference is a penalty on the
  reward (r - beta * sum_t (old_logp - ref_logp)), the baseline is the group mean (no learned
  value model), and the loss is the clipped surrogate alone.

Sequence losses are the mean over the reply's tokens; a step's loss is the mean over sequences.
"""

from __future__ import annotations

import torch


def group_advantages(rewards: torch.Tensor, groups: torch.Tensor, scale: bool = True,
                     eps: float = 1e-4) -> torch.Tensor:
    """rewards [N], groups [N] (the prompt each sample answers) -> advantages [N]: centred on
    the group mean and, with ``scale``, divided by the group's standard deviation (Bessel's
    correction, as TRL's GRPOTrainer). A group of one sample gets advantage 0."""
    rewards = rewards.double()
    out = torch.zeros_like(rewards)
    for g in groups.unique():
        members = groups == g
        r = rewards[members]
        centred = r - r.mean()
        if scale and len(r) > 1:
            centred = centred / (r.std() + eps)
        out[members] = centred if len(r) > 1 else 0.0
    return out


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from the sampled tokens' log-probs."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def ppo_rewards(rewards: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor,
                beta: float) -> torch.Tensor:
    """Rewards less beta times the sampled reply's summed log-ratio to the reference [N]."""
    kl = ((old_logp - ref_logp) * mask).sum(-1)
    return rewards.double() - beta * kl.double()


def clipped_surrogate(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                      clip_eps: float, beta: float = 0.0, ref_logp: torch.Tensor | None = None):
    """Per-sequence losses [N] and statistics (each [N], for logging).

    logp, old_logp, ref_logp, mask: [N, T] over each row's positions (mask 1 on reply tokens);
    advantages [N]. The loss of a token is -min(ratio * A, clip(ratio, 1 +- eps) * A), plus
    beta * k3 KL when ``beta`` and ``ref_logp`` are given (GRPO); a sequence's loss is the mean
    over its reply tokens.
    """
    mask = mask.to(logp.dtype)
    ratio = torch.exp(logp - old_logp)
    adv = advantages.to(logp.dtype)[:, None]
    unclipped, clipped = ratio * adv, ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv
    per_token = -torch.minimum(unclipped, clipped)
    n = mask.sum(-1).clamp(min=1)
    stats = {"clip_frac": ((clipped < unclipped).to(logp.dtype) * mask).sum(-1) / n}
    if ref_logp is not None:
        kl = kl_k3(logp, ref_logp)
        stats["kl"] = (kl.detach() * mask).sum(-1) / n
        if beta:
            per_token = per_token + beta * kl
    return (per_token * mask).sum(-1) / n, stats
