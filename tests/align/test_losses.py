"""GRPO and PPO-clip losses against values worked out by hand."""

import math

import pytest
import torch

from openglm.align.losses import clipped_surrogate, group_advantages, kl_k3, ppo_rewards

EPS = 1e-4  # group_advantages' default


def test_advantages_are_normalised_within_each_group():
    rewards = torch.tensor([2.0, 0.0, 1.0, 5.0, 5.0, 7.0, 3.0])
    groups = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    adv = group_advantages(rewards, groups)
    # group 0: mean 1, sample std 1; group 1: all equal -> 0; group 2: mean 5, std sqrt(8)
    s2 = math.sqrt(8)
    want = [1 / (1 + EPS), -1 / (1 + EPS), 0.0, 0.0, 0.0, 2 / (s2 + EPS), -2 / (s2 + EPS)]
    assert adv.tolist() == pytest.approx(want, abs=1e-12)
    centred = group_advantages(rewards, groups, scale=False)
    assert centred.tolist() == pytest.approx([1, -1, 0, 0, 0, 2, -2])
    # a group of one sample has nothing to compare with
    assert group_advantages(torch.tensor([3.0]), torch.tensor([0])).tolist() == [0.0]


def test_clipped_surrogate_by_hand():
    old = torch.log(torch.tensor([[0.2, 0.5, 0.1], [0.2, 0.5, 0.1]], dtype=torch.float64))
    # row 0 and row 1: the new policy makes token 0 1.5x and token 1 equally likely; token 2 is padding
    logp = old + torch.log(torch.tensor([[1.5, 1.0, 9.0], [1.5, 1.0, 9.0]], dtype=torch.float64))
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    losses, stats = clipped_surrogate(logp, old, adv, mask, clip_eps=0.2)
    # A=+1: token 0 is clipped at 1.2 -> -1.2; token 1: -1.0; mean -1.1 (half the tokens clipped)
    # A=-1: min(-1.5, -1.2) = -1.5 is the unclipped term -> +1.5; token 1: +1.0; mean 1.25
    assert losses.tolist() == pytest.approx([-1.1, 1.25])
    assert stats["clip_frac"].tolist() == pytest.approx([0.5, 0.0])
    assert "kl" not in stats


def test_grpo_kl_term_by_hand():
    logp = torch.log(torch.tensor([[0.5, 0.25]], dtype=torch.float64))
    ref = logp - math.log(2)  # the reference gives each sampled token half the probability
    k3 = 0.5 + math.log(2) - 1  # exp(d) - d - 1 with d = -log 2
    assert kl_k3(logp, ref)[0].tolist() == pytest.approx([k3, k3])
    losses, stats = clipped_surrogate(logp, logp, torch.tensor([0.0]), torch.ones(1, 2), 0.2, beta=0.1,
                                      ref_logp=ref)
    assert losses.tolist() == pytest.approx([0.1 * k3])  # advantage 0: only the KL term is left
    assert stats["kl"].tolist() == pytest.approx([k3])
    # with beta 0 (PPO) the KL is logged but not in the loss
    losses, stats = clipped_surrogate(logp, logp, torch.tensor([0.0]), torch.ones(1, 2), 0.2, beta=0.0,
                                      ref_logp=ref)
    assert losses.tolist() == [0.0] and stats["kl"].tolist() == pytest.approx([k3])


def test_ppo_reward_penalises_the_summed_log_ratio():
    old = torch.tensor([[-1.0, -2.0, -3.0]])
    ref = torch.tensor([[-1.5, -2.5, -9.0]])
    mask = torch.tensor([[1, 1, 0]])  # the third position is not a reply token
    assert ppo_rewards(torch.tensor([1.0]), old, ref, mask, beta=0.1).tolist() == pytest.approx([1.0 - 0.1 * 1.0])


def test_the_surrogate_gradient_pushes_toward_positive_advantages():
    logits = torch.zeros(2, 4, requires_grad=True)
    tokens = torch.tensor([[1], [2]])
    logp = torch.log_softmax(logits, -1).gather(1, tokens)
    losses, _ = clipped_surrogate(logp, logp.detach(), torch.tensor([1.0, -1.0]), torch.ones(2, 1), 0.2)
    losses.sum().backward()
    assert logits.grad[0, 1] < 0 and logits.grad[1, 2] > 0  # descent raises token 1 in row 0, lowers token 2 in row 1
