"""Generation: greedy parity with transformers' generate, stops, streaming, sampling, limits."""

import pytest
import torch

import openglm
from openglm.infer import ContextLengthError, Sampling, complete, generate_ids
from openglm.infer.sampling import penalize_repeats
from openglm.tokenizer import default_tokenizer
from tests.conftest import make_hf

VOCAB = 16384  # the default tokenizer's size


@pytest.fixture(scope="module", params=["glm", "glm4"])
def pair(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    hf = make_hf(request.param, seed=7, vocab_size=VOCAB, num_hidden_layers=2, max_position_embeddings=512)
    hf.save_pretrained(d)
    return hf, openglm.load_model(d).eval()


@pytest.fixture(scope="module")
def tok():
    return default_tokenizer()


PROMPTS = [[5, 17, 923, 4411, 88, 1024, 7, 7, 3000, 12], [901, 2, 15000], [44, 45, 46, 47, 48, 49]]


def test_greedy_batch_equals_transformers_generate(pair):
    hf, ours = pair
    T = max(map(len, PROMPTS))
    ids = torch.tensor([[0] * (T - len(p)) + p for p in PROMPTS])
    mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in PROMPTS])
    want = hf.generate(ids, attention_mask=mask, max_new_tokens=64, min_new_tokens=64, do_sample=False,
                       eos_token_id=None, pad_token_id=0)[:, T:]
    steps = list(generate_ids(ours, PROMPTS, 64, Sampling(), stop_ids=()))
    got = torch.tensor(steps).T
    assert got.shape == (3, 64)
    assert torch.equal(got, want)


def test_batched_rows_equal_single_runs(pair):
    _, ours = pair
    batch = torch.tensor(list(generate_ids(ours, PROMPTS, 20))).T
    for b, p in enumerate(PROMPTS):
        alone = torch.tensor(list(generate_ids(ours, [p], 20))).T[0]
        assert torch.equal(batch[b], alone)


def test_repeated_prompts_are_prefilled_once_and_decode_as_alone(pair):
    _, ours = pair
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[2], PROMPTS[1]]
    batch = torch.tensor(list(generate_ids(ours, prompts, 20))).T
    for b, p in enumerate(prompts):
        assert torch.equal(batch[b], torch.tensor(list(generate_ids(ours, [p], 20))).T[0])
    # sampled rows of one prompt diverge: each row draws its own tokens after the shared prefill
    sampled = torch.tensor(list(generate_ids(ours, [PROMPTS[2]] * 4, 12, Sampling(1.0, seed=3)))).T
    assert len({tuple(r.tolist()) for r in sampled}) > 1


def test_stop_id_ends_generation(pair, tok):
    _, ours = pair
    free = complete(ours, tok, "Stop here", 30, stop_ids=[])[0]
    stop = free.token_ids[11]
    first = free.token_ids.index(stop)  # the stop token may also occur earlier
    out = complete(ours, tok, "Stop here", 30, stop_ids=[stop])[0]
    assert out.finish_reason == "stop"
    assert out.token_ids == free.token_ids[: first + 1]
    assert free.finish_reason == "length" and len(free.token_ids) == 30
    steps = list(generate_ids(ours, [PROMPTS[0], PROMPTS[1]], 30, stop_ids=[stop]))
    assert all(len(s) == 2 for s in steps)  # rows that stopped report None, the batch goes on


def test_glm4_stop_ids_are_the_defaults(tok):
    names = ["<|endoftext|>", "<|user|>", "<|observation|>"]
    assert tok.stop_ids == [tok.token_id(n) for n in names]


def test_stop_string_cuts_text_and_streaming_agrees(pair, tok):
    _, ours = pair
    prompt = "The quick brown fox"
    full = openglm.generate(ours, tok, prompt, 40, stop_ids=[])
    assert len(full) > 20
    stop = full[10:14]
    cut = openglm.generate(ours, tok, prompt, 40, stop_ids=[], stop=[stop])
    assert cut == full[: full.find(stop)]
    assert openglm.generate(ours, tok, [prompt, prompt], 40, stop_ids=[], stop=[stop]) == [cut, cut]
    streamed = "".join(openglm.generate(ours, tok, prompt, 40, stop_ids=[], stop=[stop], stream=True))
    assert streamed == cut
    assert "".join(openglm.generate(ours, tok, prompt, 40, stop_ids=[], stream=True)) == full


def test_prompt_longer_than_context_is_a_clear_error(pair, tok):
    _, ours = pair
    with pytest.raises(ContextLengthError, match=r"prompt has 600 tokens but the model's context is 512"):
        list(generate_ids(ours, [[5] * 600], 4))


def test_max_new_tokens_is_clamped_to_the_context(pair):
    _, ours = pair
    steps = list(generate_ids(ours, [[5] * 500], 100, stop_ids=()))
    assert len(steps) == 12


def test_sampling_is_reproducible_with_a_seed(pair, tok):
    _, ours = pair
    kw = dict(max_new_tokens=25, temperature=1.5, top_p=0.95, top_k=200, stop_ids=[])
    a = openglm.generate(ours, tok, "hello", seed=1, **kw)
    b = openglm.generate(ours, tok, "hello", seed=1, **kw)
    c = openglm.generate(ours, tok, "hello", seed=2, **kw)
    assert a == b and a != c
    greedy = openglm.generate(ours, tok, "hello", max_new_tokens=25, stop_ids=[])
    assert openglm.generate(ours, tok, "hello", max_new_tokens=25, temperature=2.0, top_k=1, seed=3,
                            stop_ids=[]) == greedy


def test_repetition_penalty_rule():
    logits = torch.tensor([[2.0, -2.0, 1.0, -1.0]])
    seen = torch.tensor([[True, True, False, False]])
    assert torch.equal(penalize_repeats(logits, seen, 2.0), torch.tensor([[1.0, -4.0, 1.0, -1.0]]))


def test_top_p_keeps_the_smallest_set_over_p():
    from openglm.infer.sampling import choose

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    g = torch.Generator().manual_seed(0)
    picks = {int(choose(logits, Sampling(temperature=1.0, top_p=0.8), g)) for _ in range(300)}
    assert picks == {0, 1}


def test_chat_prompt_uses_the_glm4_format(tok):
    cfg = openglm.GLMConfig.from_preset("nano", num_layers=1)
    model = openglm.GLM(cfg).eval()
    msgs = [{"role": "user", "content": "你好"}]
    out = complete(model, tok, msgs, 3, stop_ids=[])[0]
    assert len(out.token_ids) == 3
    ids = tok.encode_chat(msgs)
    assert ids[:2] == [tok.token_id("[gMASK]"), tok.token_id("<sop>")]
    assert ids[-1] == tok.token_id("<|assistant|>")


def test_bad_sampling_arguments_are_rejected():
    with pytest.raises(ValueError, match="top_p"):
        Sampling(top_p=0)
