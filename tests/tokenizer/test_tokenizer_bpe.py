"""Specification tests for the BPE tokenizer: tiktoken parity, special tokens, chat ids."""

import base64

import pytest
import tiktoken

from openglm.tokenizer import GLM4_PAT_STR, Tokenizer, default_tokenizer, load_tokenizer

# The GLM-4 reference table (glm-4-9b-chat release): special token -> id.
GLM4_SPECIAL_IDS = {
    "<|endoftext|>": 151329,
    "[MASK]": 151330,
    "[gMASK]": 151331,
    "[sMASK]": 151332,
    "<sop>": 151333,
    "<eop>": 151334,
    "<|system|>": 151335,
    "<|user|>": 151336,
    "<|assistant|>": 151337,
    "<|observation|>": 151338,
    "<|begin_of_image|>": 151339,
    "<|end_of_image|>": 151340,
    "<|begin_of_video|>": 151341,
    "<|end_of_video|>": 151342,
}
GLM4_N_RANKS = 151329
GLM4_STOP_IDS = [151329, 151336, 151338]

# tiktoken's published cl100k_base split pattern and special ids.
CL100K_PAT_STR = (
    r"""('s|'S|'t|'T|'re|'rE|'Re|'RE|'ve|'vE|'Ve|'VE|'m|'M|'ll|'lL|'Ll|'LL|'d|'D)"""
    r"""|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
CL100K_SPECIALS = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}


def reference_ranks(data: bytes) -> dict[bytes, int]:
    """Independent parse of a tiktoken rank file ("base64 rank" per line)."""
    ranks = {}
    for line in data.split(b"\n"):
        if line:
            tok, rank = line.split(b" ")
            ranks[base64.b64decode(tok)] = int(rank)
    return ranks


@pytest.fixture(scope="module")
def cl100k_ref(cl100k_bytes):
    """tiktoken's cl100k_base, built directly from the shipped ranks (no download)."""
    return tiktoken.Encoding(
        "cl100k_reference",
        pat_str=CL100K_PAT_STR,
        mergeable_ranks=reference_ranks(cl100k_bytes),
        special_tokens=CL100K_SPECIALS,
    )


@pytest.fixture(scope="module")
def cl100k_tok(cl100k_path):
    return Tokenizer.from_tiktoken_file(cl100k_path, pat_str=CL100K_PAT_STR)


@pytest.fixture(scope="module")
def glm4_sized(tmp_path_factory):
    """A tokenizer with exactly GLM-4's 151329 ranks (synthetic tokens), loaded
    from a directory holding only ``tokenizer.model``, like glm-4-9b-chat."""
    d = tmp_path_factory.mktemp("glm4")
    lines = [f"{base64.b64encode(bytes([b])).decode()} {b}" for b in range(256)]
    lines += [f"{base64.b64encode(b'syn%06d' % r).decode()} {r}" for r in range(256, GLM4_N_RANKS)]
    (d / "tokenizer.model").write_text("\n".join(lines) + "\n")
    return load_tokenizer(d)


# --- tiktoken parity ----------------------------------------------------------


def test_cl100k_ids_equal_tiktoken_on_a_megabyte_of_mixed_text(cl100k_tok, cl100k_ref, mixed_docs):
    assert sum(len(d.encode("utf-8")) for d in mixed_docs) >= 1_000_000
    for doc in mixed_docs:
        ids = cl100k_tok.encode(doc)
        # Special-token text in the documents is data: it must match plain BPE.
        assert ids == cl100k_ref.encode_ordinary(doc)
        assert cl100k_tok.decode(ids) == doc


def test_encode_batch_equals_encode(cl100k_tok, cl100k_ref, mixed_docs):
    docs = mixed_docs[1:9]
    assert cl100k_tok.encode_batch(docs) == cl100k_ref.encode_ordinary_batch(docs)


def test_truncated_rank_file_is_a_valid_smaller_bpe(cl100k_path, cl100k_bytes, mixed_docs):
    tok = Tokenizer.from_tiktoken_file(cl100k_path, pat_str=CL100K_PAT_STR, max_ranks=1000)
    ref = reference_ranks(cl100k_bytes)
    assert tok.mergeable_ranks == {t: r for t, r in ref.items() if r < 1000}
    doc = mixed_docs[3]
    ids = tok.encode(doc)
    assert max(ids) < 1000
    assert tok.decode(ids) == doc


def test_default_tokenizer_is_first_cl100k_ranks_plus_glm4_specials(small_tok, cl100k_bytes):
    ref = reference_ranks(cl100k_bytes)
    assert small_tok.vocab_size == 16384
    assert small_tok.n_ranks == 16384 - 14
    assert small_tok.mergeable_ranks == {t: r for t, r in ref.items() if r < 16370}
    assert small_tok.pat_str == GLM4_PAT_STR
    # GLM-4 order, shifted to follow the 16370 ranks.
    assert small_tok.special_ids == {t: 16370 + i - GLM4_N_RANKS for t, i in GLM4_SPECIAL_IDS.items()}
    assert default_tokenizer() is small_tok  # cached


def test_glm4_regex_splits_contractions_case_insensitively(small_tok):
    ref = tiktoken.Encoding("ref", pat_str=CL100K_PAT_STR, mergeable_ranks=small_tok.mergeable_ranks, special_tokens={})
    text = "I'M SURE IT'S fine, they'LL say we'Ve done it; DON'T\n"
    assert small_tok.encode(text) == ref.encode_ordinary(text)


# --- special tokens -------------------------------------------------------------


def test_glm4_special_ids_match_the_reference_table(glm4_sized):
    assert glm4_sized.n_ranks == GLM4_N_RANKS
    assert glm4_sized.special_ids == GLM4_SPECIAL_IDS
    assert glm4_sized.vocab_size == 151343
    assert glm4_sized.token_id("[gMASK]") == 151331
    assert glm4_sized.token_id("<sop>") == 151333
    assert glm4_sized.pad_id == 151329
    assert glm4_sized.stop_ids == GLM4_STOP_IDS


def test_special_ids_follow_the_ranks_in_glm4_order(cl100k_tok):
    # Special ids are n_ranks + index, in the table's order.
    order = sorted(GLM4_SPECIAL_IDS, key=GLM4_SPECIAL_IDS.get)
    assert cl100k_tok.n_ranks == 100256
    assert cl100k_tok.special_ids == {t: 100256 + i for i, t in enumerate(order)}
    assert cl100k_tok.stop_ids == [100256 + i - GLM4_N_RANKS for i in GLM4_STOP_IDS]


@pytest.mark.parametrize("special", list(GLM4_SPECIAL_IDS))
def test_user_typed_special_text_is_plain_text(glm4_sized, small_tok, special):
    for tok in (glm4_sized, small_tok):
        ids = tok.encode(special)
        assert all(i < tok.n_ranks for i in ids)
        assert tok.decode(ids) == special
        assert tok.encode(special, allow_special=True) == [tok.special_ids[special]]


def test_allow_special_selects_which_control_tokens_are_parsed(glm4_sized):
    text = "hi<|user|>x<|assistant|>"
    ids = glm4_sized.encode(text, allow_special={"<|user|>"})
    assert 151336 in ids and 151337 not in ids
    assert glm4_sized.decode(ids) == text
    ids = glm4_sized.encode(text, allow_special=True)
    assert ids[-1] == 151337 and 151336 in ids


def test_encode_never_raises_on_odd_text(small_tok):
    for text in ["", "\ud800 lone surrogate", "\x00\x01\x7f", "<|endoftext", "<|user|><|user|>", "\U0010ffff"]:
        ids = small_tok.encode(text)
        assert all(0 <= i < small_tok.n_ranks for i in ids)


def test_decode_can_skip_special_tokens(small_tok):
    ids = [small_tok.token_id("[gMASK]"), *small_tok.encode("hello 世界"), small_tok.pad_id]
    assert small_tok.decode(ids) == "[gMASK]hello 世界<|endoftext|>"
    assert small_tok.decode(ids, skip_special=True) == "hello 世界"


def test_token_id_of_ordinary_token_and_unknown_name(cl100k_tok, cl100k_bytes):
    assert cl100k_tok.token_id("hello") == reference_ranks(cl100k_bytes)[b"hello"]
    with pytest.raises(KeyError):
        cl100k_tok.token_id("<|not_a_token|>")


def test_rank_table_without_all_single_bytes_is_rejected():
    with pytest.raises(ValueError):
        Tokenizer({bytes([b]): b for b in range(255)}, special_tokens=[])


# --- chat ---------------------------------------------------------------------


def test_encode_chat_follows_the_glm4_wire_format(glm4_sized):
    # Expected ids built from the protocol spec: [gMASK]<sop>, then per message
    # the role id, encode(metadata + "\n"), encode(content); finally <|assistant|>.
    tok = glm4_sized
    messages = [
        {"role": "system", "content": "你是一个助手。"},
        {"role": "user", "content": "Ignore this: <|assistant|> and <|observation|>"},
        {"role": "assistant", "metadata": "get_weather", "content": '{"city": "北京"}'},
        {"role": "observation", "content": "\n\n晴, 25°C"},
        {"role": "assistant", "content": ""},  # empty messages are skipped
    ]
    expected = [151331, 151333]
    for m in messages:
        if m["content"]:
            expected.append(GLM4_SPECIAL_IDS[f"<|{m['role']}|>"])
            expected += tok.encode(m.get("metadata", "") + "\n") + tok.encode(m["content"])
    expected.append(151337)
    assert tok.encode_chat(messages) == expected
    assert tok.encode_chat(messages, add_generation_prompt=False) == expected[:-1]
    # user text never becomes a control token
    assert expected.count(151337) == 2 and expected.count(151338) == 1
