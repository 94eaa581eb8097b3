"""Specification tests for saving/loading and transformers interop."""

import base64
import json
import shutil
from importlib import resources

import pytest

from openglm.tokenizer import Tokenizer, load_tokenizer

CL100K_PAT_STR = (
    r"""('s|'S|'t|'T|'re|'rE|'Re|'RE|'ve|'vE|'Ve|'VE|'m|'M|'ll|'lL|'Ll|'LL|'d|'D)"""
    r"""|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def same_tokenizer(a: Tokenizer, b: Tokenizer) -> bool:
    return (a.mergeable_ranks, a.special_ids, a.pat_str) == (b.mergeable_ranks, b.special_ids, b.pat_str)


@pytest.fixture(scope="module")
def saved_dir(small_tok, tmp_path_factory):
    d = tmp_path_factory.mktemp("saved")
    small_tok.save(d)
    return d


@pytest.fixture(scope="module")
def hf_tok(saved_dir):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(saved_dir)


def test_save_writes_the_three_files(saved_dir, small_tok):
    assert {p.name for p in saved_dir.iterdir()} == {"tokenizer.model", "tokenizer.json", "tokenizer_config.json"}
    # tokenizer.model is a plain tiktoken rank file.
    ranks = {}
    for line in (saved_dir / "tokenizer.model").read_bytes().splitlines():
        tok, rank = line.split()
        ranks[base64.b64decode(tok)] = int(rank)
    assert ranks == small_tok.mergeable_ranks
    cfg = json.loads((saved_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert cfg["eos_token"] == cfg["pad_token"] == "<|endoftext|>"
    template = (resources.files("openglm") / "assets" / "glm-4-9b-chat.chat_template.jinja").read_text(encoding="utf-8")
    assert cfg["chat_template"] == template


def test_tokenizer_json_is_a_byte_level_bpe_with_the_split_regex(saved_dir, small_tok):
    data = json.loads((saved_dir / "tokenizer.json").read_text(encoding="utf-8"))
    assert data["model"]["type"] == "BPE"
    pre = data["pre_tokenizer"]["pretokenizers"]
    assert pre[0]["type"] == "Split" and pre[0]["pattern"]["Regex"] == small_tok.pat_str
    assert pre[1]["type"] == "ByteLevel" and pre[1]["use_regex"] is False
    assert data["decoder"]["type"] == "ByteLevel"
    added = {t["content"]: t["id"] for t in data["added_tokens"] if t["special"]}
    assert added == small_tok.special_ids
    # GPT-2 byte alphabet: " " is stored as "Ġ", "\n" as "Ċ".
    assert data["model"]["vocab"]["Ġthe"] == small_tok.token_id(" the")
    assert data["model"]["vocab"]["Ċ"] == small_tok.token_id("\n")


def test_load_round_trips_through_tokenizer_model_and_tokenizer_json(saved_dir, small_tok, tmp_path):
    assert same_tokenizer(load_tokenizer(saved_dir), small_tok)
    assert same_tokenizer(load_tokenizer(saved_dir / "tokenizer.json"), small_tok)
    # A rank file path alone means GLM-4 regex and specials.
    assert same_tokenizer(load_tokenizer(saved_dir / "tokenizer.model"), small_tok)
    # A directory with only tokenizer.json (like GLM-4 "-hf" checkpoints).
    shutil.copy(saved_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    assert same_tokenizer(load_tokenizer(tmp_path), small_tok)


def test_a_non_glm4_regex_survives_save_and_load(cl100k_path, tmp_path):
    tok = Tokenizer.from_tiktoken_file(cl100k_path, pat_str=CL100K_PAT_STR, max_ranks=2000)
    tok.save(tmp_path)
    assert same_tokenizer(load_tokenizer(tmp_path), tok)


def test_load_reads_glm4_special_ids_from_tokenizer_config(saved_dir, small_tok, tmp_path):
    # glm-4-9b-chat ships tokenizer.model + tokenizer_config.json (added_tokens_decoder).
    shutil.copy(saved_dir / "tokenizer.model", tmp_path / "tokenizer.model")
    cfg = {"added_tokens_decoder": {"16370": {"content": "<|endoftext|>", "special": True}}}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert load_tokenizer(tmp_path).special_ids == {"<|endoftext|>": 16370}


def test_tokenizer_json_with_merges_out_of_rank_order_is_rejected(saved_dir, tmp_path):
    data = json.loads((saved_dir / "tokenizer.json").read_text(encoding="utf-8"))
    data["model"]["merges"].reverse()
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="rank order"):
        load_tokenizer(tmp_path)


def test_transformers_autotokenizer_gives_identical_ids(hf_tok, small_tok, mixed_docs, bmp_docs):
    docs = bmp_docs + mixed_docs[1:16]
    for doc in docs:
        ours = small_tok.encode(doc, allow_special=True)  # transformers parses special text
        assert hf_tok.encode(doc, add_special_tokens=False) == ours
        assert hf_tok(doc)["input_ids"] == ours  # no BOS/EOS added
        assert hf_tok.decode(ours) == small_tok.decode(ours)
    assert hf_tok.eos_token_id == hf_tok.pad_token_id == small_tok.pad_id
    assert len(hf_tok) == small_tok.vocab_size


def test_apply_chat_template_equals_encode_chat(hf_tok, small_tok):
    messages = [
        {"role": "system", "content": "You are a helpful assistant. 请用中文回答。"},
        {"role": "user", "content": "What's the weather in 北京? 😀"},
        {"role": "assistant", "metadata": "get_weather", "content": '{"city": "北京"}'},
        {"role": "observation", "content": '{"temperature": 25, "sky": "晴"}'},
        {"role": "assistant", "content": "北京今天晴，25°C。"},
        {"role": "user", "content": "thanks!\n"},
    ]
    for gen in (True, False):
        hf_ids = hf_tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=gen, return_dict=True)
        assert hf_ids["input_ids"] == small_tok.encode_chat(messages, add_generation_prompt=gen)


def test_token_unreachable_by_merges_is_still_emitted_whole(tmp_path):
    # tiktoken emits a pre-tokenized piece that is itself a token as that one id,
    # even when no chain of merges builds it ("abc" below: no "ab" or "bc").
    transformers = pytest.importorskip("transformers")
    ranks = {bytes([b]): b for b in range(256)}
    ranks[b"abc"] = 256
    ranks[b"xy"] = 257
    tok = Tokenizer(ranks, special_tokens=["<|endoftext|>"])
    assert tok.encode("abc xy abcd") == [256, ord(" "), 257, ord(" "), *b"abcd"]
    tok.save(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert hf.encode("abc xy abcd") == tok.encode("abc xy abcd")


@pytest.mark.slow
def test_full_cl100k_vocabulary_exports_exactly(cl100k_path, mixed_docs, tmp_path):
    # The full 100k-rank table exercises merge reconstruction far beyond the
    # small default vocabulary; repeated-character runs stress merge order.
    transformers = pytest.importorskip("transformers")
    tok = Tokenizer.from_tiktoken_file(cl100k_path)
    tok.save(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    runs = [c * n for c in [" ", "\n", "=", "-", "*", "#", "0", "啊", "ab", "😀"] for n in (1, 2, 3, 5, 8, 17, 64, 200)]
    for doc in [*mixed_docs[1:6], "\n".join(runs), "x".join(runs)]:
        assert hf.encode(doc, add_special_tokens=False) == tok.encode(doc, allow_special=True)


def test_copy_friendly_pattern_keeps_names_the_same_tokens_everywhere(mixed_docs, tmp_path):
    """The small-model split: a name or number is the same ids after a space, a quote or a Han
    character; with the digit groups reserved every run of up to three digits is one token;
    the pattern round-trips through tokenizer.json into transformers."""
    from openglm.tokenizer import COPY_FRIENDLY_PAT_STR, digit_groups, reserve_pieces, train_bpe

    texts = mixed_docs[:40] + ['{"city": "Hanoi"} in Hanoi 河内 在河内 2025-10-29'] * 50
    ranks = reserve_pieces(train_bpe(texts, 2400, pat_str=COPY_FRIENDLY_PAT_STR), digit_groups(), 2400)
    tok = Tokenizer(ranks, pat_str=COPY_FRIENDLY_PAT_STR)
    for name in ("Hanoi", "Auckland", "厦门", "20233"):
        want = tok.encode(name)
        for context in (" {}", '"{}"', "在{}有", "({})", "\n{}?"):
            ids = tok.encode(context.format(name))
            assert any(ids[i:i + len(want)] == want for i in range(len(ids))), (name, context)
    assert tok.encode("2025") == [tok.encode("202")[0], tok.encode("5")[0]]  # groups of three, from the left
    assert tok.decode(tok.encode("x638447y")) == "x638447y" and len(tok.encode("638447")) == 2
    tok.save(tmp_path)
    assert same_tokenizer(load_tokenizer(tmp_path), tok)
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for doc in mixed_docs[40:60]:
        assert hf.encode(doc, add_special_tokens=False) == tok.encode(doc, allow_special=True)
