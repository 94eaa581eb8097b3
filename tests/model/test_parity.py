"""Logits parity with transformers' GlmForCausalLM / Glm4ForCausalLM on random weights."""

import pytest
import torch

import openglm.io as io
from tests.conftest import make_hf

TOL = 1e-4
# Three tiny shapes per variant: 1 KV head, head_dim 32, odd vocab sizes, MHA, tied head.
CONFIGS = [
    dict(num_key_value_heads=1, head_dim=32, vocab_size=251, hidden_size=96, num_attention_heads=3),
    dict(num_key_value_heads=2, head_dim=16, vocab_size=1001, num_hidden_layers=3,
         rope_parameters={"rope_type": "default", "rope_theta": 5e6, "partial_rotary_factor": 0.5}),
    dict(num_key_value_heads=4, head_dim=8, vocab_size=129, tie_word_embeddings=True, rms_norm_eps=1.5625e-7),
]
# Each also with the CPU inference modules swapped in (for_inference), which must match as well.
CASES = [(v, i, s) for v in ("glm", "glm4") for i in range(len(CONFIGS)) for s in ("reference", "fast")]


@pytest.fixture(params=CASES, ids=[f"{v}-{i}-{s}" for v, i, s in CASES])
def pair(request, tmp_path):
    variant, i, setting = request.param
    hf = make_hf(variant, seed=i, **CONFIGS[i])
    hf.save_pretrained(tmp_path, safe_serialization=True)
    ours = io.load_model(tmp_path, dtype=torch.float32)
    return hf, ours.for_inference() if setting == "fast" else ours.eval()


@pytest.mark.parametrize("length", [37, 401])  # 401: fast prompts take halved_causal_attention
def test_full_forward_matches(pair, length):
    hf, ours = pair
    ids = torch.randint(0, hf.config.vocab_size, (2, length), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = hf(ids).logits
        got = ours(ids)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= TOL


def test_token_by_token_decoding_with_cache_matches(pair):
    hf, ours = pair
    ids = torch.randint(0, hf.config.vocab_size, (1, 24), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = hf(ids).logits
        cache = ours.new_cache(1, 32)
        prefix = ours(ids[:, :8], cache=cache)  # a prefill, then one token at a time
        steps = [ours(ids[:, t:t + 1], cache=cache) for t in range(8, 24)]
    got = torch.cat([prefix] + steps, dim=1)
    assert (got - want).abs().max().item() <= TOL


def test_left_padded_batch_matches(pair):
    hf, ours = pair
    g = torch.Generator().manual_seed(3)
    lengths = [20, 13, 6]
    T = max(lengths)
    ids = torch.zeros(len(lengths), T, dtype=torch.long)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    for b, n in enumerate(lengths):
        ids[b, T - n:] = torch.randint(2, hf.config.vocab_size, (n,), generator=g)
        mask[b, T - n:] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        want = hf(ids, attention_mask=mask, position_ids=pos).logits
        got = ours(ids, attention_mask=mask)
        # and each row alone, unpadded, gives the same logits as inside the padded batch
        alone = [ours(ids[b:b + 1, T - n:]) for b, n in enumerate(lengths)]
    for b, n in enumerate(lengths):
        assert (got[b, T - n:] - want[b, T - n:]).abs().max().item() <= TOL
        assert (got[b, T - n:] - alone[b][0]).abs().max().item() <= TOL


def test_left_padded_batch_decoding_with_cache(pair):
    hf, ours = pair
    g = torch.Generator().manual_seed(4)
    lengths, T, new = [9, 4], 9, 6
    ids = torch.zeros(2, T + new, dtype=torch.long)
    mask = torch.zeros(2, T + new, dtype=torch.long)
    for b, n in enumerate(lengths):
        ids[b, T - n:] = torch.randint(2, hf.config.vocab_size, (n + new,), generator=g)
        mask[b, T - n:] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        want = hf(ids, attention_mask=mask, position_ids=pos).logits
        cache = ours.new_cache(2, T + new)
        out = [ours(ids[:, :T], attention_mask=mask[:, :T], cache=cache)]
        for t in range(T, T + new):
            out.append(ours(ids[:, t:t + 1], attention_mask=mask[:, :t + 1], cache=cache))
    got = torch.cat(out, dim=1)
    for b, n in enumerate(lengths):
        assert (got[b, T - n:] - want[b, T - n:]).abs().max().item() <= TOL


@pytest.mark.parametrize("keep", [1, 4])
def test_last_positions_only_match(pair, keep):
    """logits_to_keep: the last layer computes only the kept positions; logits and the KV cache
    it leaves behind match the full computation (plain, left-padded, and a chunk after a cache)."""
    hf, ours = pair
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(2, hf.config.vocab_size, (2, 19), generator=g)
    mask = torch.ones(2, 19, dtype=torch.long)
    mask[1, :7] = 0
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        want = hf(ids, attention_mask=mask, position_ids=pos).logits[:, -keep:]
        assert (ours(ids, attention_mask=mask, logits_to_keep=keep) - want).abs().max().item() <= TOL
        plain = hf(ids).logits[:, -keep:]
        assert (ours(ids, logits_to_keep=keep) - plain).abs().max().item() <= TOL
        full, part = ours.new_cache(2, 19), ours.new_cache(2, 19)
        ours(ids[:, :11], cache=full)
        ours(ids[:, :11], cache=part, logits_to_keep=keep)
        got = ours(ids[:, 11:], cache=part, logits_to_keep=keep)  # past > 0, several new tokens
        ours(ids[:, 11:], cache=full)
    assert (got - plain).abs().max().item() <= TOL
    for a, b in zip(full.k + full.v, part.k + part.v):
        assert torch.equal(a, b)
