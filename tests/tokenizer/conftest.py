"""Fixtures for tokenizer tests: the shipped rank file and seeded mixed-language text."""

import inspect
import random
from importlib import resources

import pytest

STDLIB_MODULES = [
    "json.decoder", "json.encoder", "argparse", "dataclasses", "textwrap", "difflib",
    "string", "random", "functools", "calendar", "tokenize", "pathlib",
]

WORDS = (
    "the quick brown fox jumps over lazy dog model token language people don't can't "
    "I'M We've they'll she'd it's Tokenizer GLM Hello world data training 2024 3.14159 "
    "naïve café résumé Zürich Ünïcödé e-mail https://example.com/a?b=c&d=1 #tag @user"
).split()

CHINESE_PUNCT = "，。！？；：、“”（）《》"


def random_cjk(rng: random.Random, n: int) -> str:
    """Chinese-like text: runs of CJK ideographs broken by punctuation and spaces."""
    out = []
    while n > 0:
        run = rng.randint(1, 24)
        out.append("".join(chr(rng.randint(0x4E00, 0x9FA5)) for _ in range(run)))
        out.append(rng.choice(CHINESE_PUNCT + " \n"))
        n -= run + 1
    return "".join(out)


def random_emoji(rng: random.Random, n: int) -> str:
    pool = [chr(c) for c in [*range(0x1F300, 0x1F650), *range(0x1F900, 0x1F9FF)]]
    pool += ["👍🏽", "👨‍👩‍👧", "🇨🇳", "❤️", "1️⃣"]  # skin tone, ZWJ, flags, variation selectors
    return "".join(rng.choice(pool) + rng.choice(["", "", " ", "中", "a"]) for _ in range(n))


def random_combining(rng: random.Random, n: int) -> str:
    return "".join(
        rng.choice("aeiouAEIOUnyz") + "".join(chr(rng.randint(0x300, 0x36F)) for _ in range(rng.randint(1, 3)))
        for _ in range(n)
    )


def random_codepoints(rng: random.Random, n: int, limit: int = 0x10FFFF) -> str:
    """Uniform random code points (surrogates excluded: they cannot round-trip UTF-8)."""
    out = []
    while len(out) < n:
        c = rng.randint(0, limit)
        if not 0xD800 <= c <= 0xDFFF:
            out.append(chr(c))
    return "".join(out)


def english(rng: random.Random, n_sentences: int) -> str:
    sents = []
    for _ in range(n_sentences):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 18))]
        sents.append(" ".join(words).capitalize() + rng.choice([".", "!", "?", ",", ".\n", "\n\n"]))
    return " ".join(sents)


def stdlib_source() -> str:
    import importlib

    return "".join(inspect.getsource(importlib.import_module(m)) for m in STDLIB_MODULES)


def mixed_documents(seed: int, n_docs: int, with_source: bool = True, all_unicode: bool = True) -> list[str]:
    """Seeded documents mixing Chinese, English, code, emoji and odd Unicode."""
    rng = random.Random(seed)
    docs = [stdlib_source()] if with_source else []
    for _ in range(n_docs):
        parts = [
            random_cjk(rng, 2000),
            english(rng, 40),
            random_emoji(rng, 200),
            random_combining(rng, 200),
            random_codepoints(rng, 300, 0x10FFFF if all_unicode else 0xFFFF),
            " " * rng.randint(1, 80) + "\n" * rng.randint(0, 3) + "\t\r\n \u3000\u00a0x",
            "<|endoftext|> <|user|> [gMASK]<sop> <|fim_prefix|>",  # special-token text as data
        ]
        rng.shuffle(parts)
        docs.append("".join(parts))
    return docs


@pytest.fixture(scope="session")
def cl100k_bytes() -> bytes:
    return (resources.files("openglm") / "assets" / "cl100k_base.tiktoken").read_bytes()


@pytest.fixture(scope="session")
def cl100k_path(tmp_path_factory, cl100k_bytes):
    # A real file path (the package may not be installed as plain files).
    path = tmp_path_factory.mktemp("ranks") / "cl100k_base.tiktoken"
    path.write_bytes(cl100k_bytes)
    return path


@pytest.fixture(scope="session")
def small_tok():
    from openglm.tokenizer import default_tokenizer

    return default_tokenizer()


@pytest.fixture(scope="session")
def mixed_docs() -> list[str]:
    """About 1.2 MB (UTF-8) of mixed text, including any Unicode code point."""
    return mixed_documents(seed=1234, n_docs=60)


@pytest.fixture(scope="session")
def bmp_docs() -> list[str]:
    """Smaller mixed text whose random code points stay in the BMP."""
    return mixed_documents(seed=99, n_docs=10, with_source=False, all_unicode=False)


@pytest.fixture
def textgen():
    """The generators, for tests that need their own seeded text."""
    return {"cjk": random_cjk, "emoji": random_emoji, "english": english, "combining": random_combining}
