"""SFT: labels exactly on assistant tokens, packing == no packing, LongAlign weighting, bad input."""

import json

import numpy as np
import pytest
import torch

from openglm import GLM, GLMConfig
from openglm.train.objectives import IGNORE, LMObjective
from openglm.train.sft import collate_rows, encode_conversation, load_conversations, pack, row_plan
from tests.train.conftest import DATA, TINY

TOOL_CONVERSATION = json.loads((DATA / "sft_tiny.jsonl").read_text().splitlines()[1])["messages"]


def _target_runs(ex):
    """Maximal runs of positions that have a target: (start, end) pairs."""
    has = ex.targets != IGNORE
    runs, start = [], None
    for i, h in enumerate(list(has) + [False]):
        if h and start is None:
            start = i
        if not h and start is not None:
            runs.append((start, i))
            start = None
    return runs


def test_targets_are_exactly_the_assistant_turns_of_a_tool_conversation(tokenizer):
    ex = encode_conversation(tokenizer, TOOL_CONVERSATION)
    has = ex.targets != IGNORE
    assert (ex.targets[has] == ex.ids[1:][has[:-1]]).all()  # a target is the next token
    # Written out by hand from the messages: each assistant turn's metadata line and content,
    # then the token that ends the turn (the next role, or <|user|> after the last reply).
    want = ['get_weather\n{"city": "Beijing"}<|observation|>', "\nIt is 21 degrees and clear in Beijing.<|user|>"]
    runs = _target_runs(ex)
    assert [tokenizer.decode(ex.targets[a:b]) for a, b in runs] == want
    assistant = tokenizer.token_id("<|assistant|>")
    assert all(ex.ids[a] == assistant for a, _ in runs)  # predicted from the role token, which is not a target
    assert not any("temperature" in tokenizer.decode(ex.targets[a:b]) for a, b in runs)
    assert tokenizer.decode(ex.ids).endswith("Beijing.<|user|>")


def test_multi_turn_conversation_has_one_target_run_per_reply(tokenizer):
    messages = json.loads((DATA / "sft_tiny.jsonl").read_text().splitlines()[3])["messages"]
    ex = encode_conversation(tokenizer, messages)
    assert [tokenizer.decode(ex.targets[a:b]) for a, b in _target_runs(ex)] == ["\nRed.<|user|>", "\nBlue.<|user|>"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GLM(GLMConfig.from_preset("nano", **TINY)).eval()


@pytest.fixture(scope="module")
def examples(tokenizer):
    exs, report = load_conversations([DATA / "sft_tiny.jsonl"], tokenizer, seq_len=512)
    assert report.kept == len(exs) == 8
    return exs


def _loss(model, batch):
    obj = LMObjective()
    with torch.no_grad():
        return (obj(model, batch)[0] / obj.normalizer(batch)).item()


@pytest.mark.parametrize("weighting", ["token", "sequence"])
def test_packed_rows_give_the_same_loss_as_one_conversation_per_row(model, examples, tokenizer, weighting):
    rows = pack([len(e) for e in examples], range(len(examples)), seq_len=512)
    assert len(rows) < len(examples)  # several conversations really share a row
    packed = collate_rows([[examples[i] for i in r] for r in rows], tokenizer.pad_id, weighting)
    unpacked = collate_rows([[e] for e in examples], tokenizer.pad_id, weighting)
    assert abs(_loss(model, packed) - _loss(model, unpacked)) < 1e-5


def test_weightings_equal_per_token_and_per_conversation_means(model, examples, tokenizer):
    losses, counts = [], []
    for e in examples:  # each conversation alone, plain model call and cross entropy
        with torch.no_grad():
            logits = model(torch.from_numpy(e.ids)[None])[0]
        t = torch.from_numpy(e.targets)
        nll = torch.nn.functional.cross_entropy(logits[t != IGNORE], t[t != IGNORE], reduction="sum").item()
        losses.append(nll)
        counts.append(int((t != IGNORE).sum()))
    rows = [[examples[i] for i in r] for r in pack([len(e) for e in examples], range(len(examples)), 512)]
    token = _loss(model, collate_rows(rows, tokenizer.pad_id, "token"))
    sequence = _loss(model, collate_rows(rows, tokenizer.pad_id, "sequence"))
    assert token == pytest.approx(sum(losses) / sum(counts), abs=1e-5)
    assert sequence == pytest.approx(np.mean([s / n for s, n in zip(losses, counts)]), abs=1e-5)


def _block_diagonal_mask(docs):
    """The definition: a token sees the earlier tokens of its own document (padding: itself)."""
    T = docs.shape[1]
    same = (docs[:, :, None] == docs[:, None, :]) & (docs[:, None, :] >= 0)
    return ((same & torch.ones(T, T, dtype=torch.bool).tril()) | torch.eye(T, dtype=torch.bool))[:, None]


@pytest.mark.parametrize("kv_heads", [2, 1])
def test_document_attention_equals_a_block_diagonal_mask_with_gradients(kv_heads):
    torch.manual_seed(0)
    model = GLM(GLMConfig.from_preset("nano", **{**TINY, "num_kv_heads": kv_heads}))
    docs = torch.tensor([[0] * 5 + [1] * 9 + [2] * 3 + [-1] * 3, [0] * 12 + [1] * 8])
    pos = torch.cat([torch.arange(n) for n in (5, 9, 3, 3, 12, 8)]).view(2, 20)
    ids = torch.randint(0, 200, (2, 20))
    real = docs >= 0
    outs = []
    for kwargs in ({"doc_ids": docs}, {"attention_mask": _block_diagonal_mask(docs), "position_ids": pos}):
        model.zero_grad()
        logits = model(ids, **kwargs)
        logits[real].square().mean().backward()  # padding's outputs are never used
        outs.append((logits[real].detach(), [p.grad.clone() for p in model.parameters()]))
    (a, grads_a), (b, grads_b) = outs
    assert (a - b).abs().max() < 1e-5  # positions restart in every document by default
    assert all((ga - gb).abs().max() < 1e-6 for ga, gb in zip(grads_a, grads_b))
    with pytest.raises(ValueError, match="doc_ids"):
        model(ids, doc_ids=docs, cache=model.new_cache(2, 32))


def test_sorted_batching_groups_similar_lengths(tokenizer, examples):
    lengths = [len(e) for e in examples]
    batches = row_plan(lengths, 512, global_batch=2, seed=0, packing=False, sorted_batching=True)(0)
    spans = sorted((min(lengths[r[0]] for r in b), max(lengths[r[0]] for r in b)) for b in batches)
    assert all(hi <= lo2 for (_, hi), (lo2, _) in zip(spans, spans[1:]))
    assert sorted(r[0] for b in batches for r in b) == list(range(len(examples)))  # nothing dropped


def test_bad_lines_are_named_or_counted(tokenizer, tmp_path):
    path = tmp_path / "bad.jsonl"
    good = (DATA / "sft_tiny.jsonl").read_text().splitlines()[0]
    no_reply = json.dumps({"messages": [{"role": "user", "content": "hi"}]})
    path.write_text("\n".join([good, "{not json", json.dumps({"messages": [{"role": "robot"}]}), no_reply]) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        load_conversations([path], tokenizer, 512)
    exs, report = load_conversations([path], tokenizer, 512, skip_invalid=True)
    assert (report.lines, report.kept, report.invalid, report.no_targets) == (4, 1, 2, 1)
    assert len(exs) == 1 and "bad.jsonl:3" in report.errors[1]
