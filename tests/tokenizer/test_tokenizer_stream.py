"""Specification tests for incremental (streaming) decoding."""

import random

import pytest

REPLACEMENT = "\ufffd"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pushing_one_token_at_a_time_never_emits_broken_characters(small_tok, textgen, seed):
    rng = random.Random(seed)
    text = textgen["cjk"](rng, 3000) + textgen["emoji"](rng, 400) + textgen["combining"](rng, 100)
    ids = small_tok.encode(text)
    dec = small_tok.stream_decoder()
    pieces = [dec.push(i) for i in ids]
    tail = dec.flush()
    assert all(REPLACEMENT not in p for p in pieces)
    assert "".join(pieces) + tail == text
    assert tail == ""
    # The test is meaningful only if characters really were split across tokens.
    assert pieces.count("") > 100


def test_partial_character_is_held_back_until_complete(small_tok):
    # "😀" is 4 UTF-8 bytes; feed it as four single-byte tokens.
    byte_ids = [small_tok.mergeable_ranks[bytes([b])] for b in "😀".encode()]
    dec = small_tok.stream_decoder()
    assert [dec.push(i) for i in byte_ids[:3]] == ["", "", ""]
    assert dec.push(byte_ids[3]) == "😀"


def test_flush_turns_an_unfinished_character_into_one_replacement(small_tok):
    byte_ids = [small_tok.mergeable_ranks[bytes([b])] for b in "中".encode()]
    dec = small_tok.stream_decoder()
    assert dec.push(small_tok.encode("a")[0]) == "a"
    assert [dec.push(i) for i in byte_ids[:2]] == ["", ""]
    assert dec.flush() == REPLACEMENT
    assert dec.push(small_tok.encode("b")[0]) == "b"  # usable after flush


@pytest.mark.parametrize("skip_special", [False, True])
def test_stream_equals_decode_on_arbitrary_ids(small_tok, skip_special):
    # Random ids (specials included) form invalid UTF-8 too; the stream must
    # still agree with one-shot decode.
    rng = random.Random(7)
    for _ in range(50):
        ids = [rng.randrange(small_tok.vocab_size) for _ in range(rng.randint(0, 40))]
        dec = small_tok.stream_decoder(skip_special=skip_special)
        streamed = "".join(dec.push(i) for i in ids) + dec.flush()
        assert streamed == small_tok.decode(ids, skip_special=skip_special)
