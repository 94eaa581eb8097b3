"""Token shards (uint32 + index.json) and the deterministic, position-recording batch loader."""

import json

import numpy as np
import pytest

from openglm.train.data import (
    StepBatches,
    TokenStream,
    split_windows,
    tokenize_text_files,
    window_plan,
    write_index,
    write_shard,
)


@pytest.fixture
def shards(tmp_path):
    a = write_shard(tmp_path / "a.bin", range(0, 10))
    b = write_shard(tmp_path / "b.bin", range(10, 25))
    write_index(tmp_path, [a, b])
    return tmp_path


def test_shards_read_as_one_stream_across_boundaries(shards):
    stream = TokenStream(shards)
    assert len(stream) == 25
    assert stream.read(7, 6).tolist() == list(range(7, 13))
    assert np.fromfile(shards / "b.bin", dtype="<u4").tolist() == list(range(10, 25))  # the documented format
    with pytest.raises(IndexError):
        stream.read(20, 6)


def test_directory_without_index_reads_every_bin_in_name_order(shards):
    (shards / "index.json").unlink()
    assert TokenStream(shards).read(0, 25).tolist() == list(range(25))


def test_index_that_disagrees_with_the_files_is_an_error(shards):
    with open(shards / "b.bin", "r+b") as f:
        f.truncate(8)
    with pytest.raises(ValueError, match=r"b.bin holds 2 tokens but .*index.json says 15"):
        TokenStream(shards)
    write_shard(shards / "b.bin", range(10, 25))
    meta = json.loads((shards / "index.json").read_text())
    meta["shards"].append({"path": "c.bin", "tokens": 3})
    (shards / "index.json").write_text(json.dumps(meta))
    with pytest.raises(FileNotFoundError, match="c.bin"):
        TokenStream(shards)


def test_text_files_become_a_shard_with_end_of_text_between_documents(tmp_path, tokenizer):
    (tmp_path / "x.txt").write_text("hello world")
    (tmp_path / "y.jsonl").write_text('{"text": "one"}\n{"text": "two"}\n')
    out = tokenize_text_files([tmp_path / "x.txt", tmp_path / "y.jsonl"], tokenizer, tmp_path / "shards")
    ids = TokenStream(out).read(0, len(TokenStream(out))).tolist()
    eos = tokenizer.eos_id
    assert ids == tokenizer.encode("hello world") + [eos] + tokenizer.encode("one") + [eos] + \
        tokenizer.encode("two") + [eos]


def _loader(rank=0, world=1, micro=2, accum=1, n=10):
    return StepBatches(window_plan(range(n), micro * accum * world, seed=3), lambda items: items, micro, accum,
                       rank, world)


def test_batches_are_a_function_of_the_step_and_resume_exactly():
    a = _loader()
    seq = [a.next() for _ in range(12)]  # past one epoch of 5 steps
    b = _loader()
    b.load_state_dict(a.state_dict() | {"step": 7})
    assert b.next() == seq[7]
    epoch0 = sorted(w for step in seq[:5] for mb in step for _, w in mb)
    assert epoch0 == list(range(10))  # every window once per epoch
    assert [w for mb in seq[5] for _, w in mb] != [w for mb in seq[0] for _, w in mb]  # reshuffled


def test_ranks_and_micro_batches_split_the_same_global_batch():
    single = _loader(micro=4)
    r0, r1 = _loader(rank=0, world=2), _loader(rank=1, world=2)
    accum = _loader(micro=2, accum=2)
    for _ in range(3):
        whole = single.next()[0]
        assert r0.next()[0] + r1.next()[0] == whole
        assert sum(accum.next(), []) == whole


def test_a_short_last_batch_is_filled_with_empty_rows_not_dropped():
    loader = _loader(micro=4, n=10)  # 10 windows: batches of 4, 4, 2 (+2 fillers)
    last = [loader.next()[0] for _ in range(3)][-1]
    assert last[2:] == [None, None] and None not in last[:2]
    with pytest.raises(ValueError, match="global batch"):
        _loader(micro=2).load_state_dict({"step": 1, "global_batch": 4})


def test_held_out_windows_are_the_tail_of_the_stream(shards):
    train, held = split_windows(TokenStream(shards), seq_len=4, eval_fraction=0.2)
    assert (list(train), list(held)) == ([0, 1, 2, 3, 4], [5])
