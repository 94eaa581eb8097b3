"""Interop with Hugging Face ``tokenizer.json`` (byte-level BPE) files.

Export: tiktoken ranks -> HF BPE (vocab in the ByteLevel unicode alphabet,
merges reconstructed from the ranks) so that ``transformers.AutoTokenizer``
loads a saved directory with no custom code and produces the same ids.
Import: the reverse, for GLM-4 ``-hf`` checkpoints that ship only tokenizer.json.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from .ranks import PAD_TOKEN, write_rank_file

if TYPE_CHECKING:
    from .core import Tokenizer

# The pattern HF's ByteLevel pre-tokenizer applies when use_regex=True (GPT-2's).
GPT2_PAT_STR = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

CHAT_TEMPLATE_ASSET = "glm-4-9b-chat.chat_template.jinja"


@lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by ByteLevel.

    Printable Latin-1 bytes map to themselves; the remaining 68 bytes (controls,
    space, ...) are shifted to U+0100 onwards so every token is visible text.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in keep}
    shift = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shift)
            shift += 1
    return table


@lru_cache(maxsize=1)
def unicode_to_byte() -> dict[str, int]:
    return {c: b for b, c in byte_to_unicode().items()}


def bytes_to_hf(token: bytes) -> str:
    table = byte_to_unicode()
    return "".join(table[b] for b in token)


def hf_to_bytes(token: str) -> bytes:
    table = unicode_to_byte()
    return bytes(table[c] for c in token)


def merges_from_ranks(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Reconstruct a merge list that makes HF's BPE follow tiktoken's rank order.

    tiktoken merges whichever adjacent pair forms the lowest-ranked token; HF
    merges the listed pair with the lowest list index. Listing *every* split of
    each token into two known tokens, ordered by the merged token's rank, makes
    the two procedures pick the same merges.
    """
    merges: list[tuple[int, int, int, bytes, bytes]] = []
    for tok, rank in ranks.items():
        for cut in range(1, len(tok)):
            left, right = tok[:cut], tok[cut:]
            rl, rr = ranks.get(left), ranks.get(right)
            if rl is not None and rr is not None:
                merges.append((rank, rl, rr, left, right))
    merges.sort()
    return [(left, right) for _, _, _, left, right in merges]


def chat_template() -> str:
    return (resources.files("openglm") / "assets" / CHAT_TEMPLATE_ASSET).read_text(encoding="utf-8")


def build_hf_tokenizer(tok: Tokenizer):
    """A ``tokenizers.Tokenizer`` equivalent to ``tok``."""
    from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    vocab = {bytes_to_hf(t): r for t, r in tok.mergeable_ranks.items()}
    merges = [(bytes_to_hf(a), bytes_to_hf(b)) for a, b in merges_from_ranks(tok.mergeable_ranks)]
    # ignore_merges: a pre-tokenized piece that is itself a token is emitted
    # whole, exactly like tiktoken's fast path (some tokens are unreachable by
    # merges alone).
    hf = HFTokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True, fuse_unk=False))
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(tok.pat_str), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    hf.decoder = decoders.ByteLevel()
    # Specials must land on exactly our ids: add them in id order and check.
    hf.add_special_tokens(
        [AddedToken(s, special=True, normalized=False, lstrip=False, rstrip=False) for s in tok.special_tokens]
    )
    for s, i in tok.special_ids.items():
        if hf.token_to_id(s) != i:
            raise ValueError(f"special ids are not contiguous after the ranks; {s!r} would get {hf.token_to_id(s)}")
    return hf


def tokenizer_config(tok: Tokenizer) -> dict:
    specials = tok.special_ids
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": {
            str(i): {
                "content": s,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for s, i in specials.items()
        },
        "additional_special_tokens": [s for s in specials if s != PAD_TOKEN],
        "clean_up_tokenization_spaces": False,  # keep decode byte-exact
        "model_max_length": 131072,
        "padding_side": "left",
        "chat_template": chat_template(),
    }
    if PAD_TOKEN in specials:
        cfg["eos_token"] = PAD_TOKEN
        cfg["pad_token"] = PAD_TOKEN
    return cfg


def save_pretrained(tok: Tokenizer, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_rank_file(directory / "tokenizer.model", tok.mergeable_ranks)
    build_hf_tokenizer(tok).save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config(tok), ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    return directory


# ---------------------------------------------------------------------------
# tokenizer.json -> ranks


def pat_str_from_hf(data: dict) -> str | None:
    """The split regex of a byte-level tokenizer.json, or None if it has none."""

    def walk(pt):
        if not pt:
            return None
        kind = pt.get("type")
        if kind == "Sequence":
            for sub in pt.get("pretokenizers", []):
                found = walk(sub)
                if found:
                    return found
        elif kind == "Split":
            pattern = pt.get("pattern", {})
            return pattern.get("Regex") or None
        elif kind == "ByteLevel" and pt.get("use_regex", True):
            return GPT2_PAT_STR
        return None

    return walk(data.get("pre_tokenizer"))


def specials_from_hf(data: dict) -> dict[str, int]:
    # All added tokens are treated as control tokens (GLM-4's all are).
    return {t["content"]: int(t["id"]) for t in data.get("added_tokens", [])}


def ranks_from_hf(data: dict) -> dict[bytes, int]:
    """Convert a byte-level BPE model to tiktoken ranks (id == rank).

    Exact for tokenizer.json files derived from tiktoken ranks (GLM-4 ``-hf``,
    files written by ``save``): there, merge order follows the merged token's
    id. Files whose merge order disagrees with the ids are rejected, since
    tiktoken has no separate merge priority.
    """
    model = data.get("model", {})
    if model.get("type") != "BPE":
        raise ValueError(f"expected a BPE model, got {model.get('type')!r}")
    added = {int(t["id"]) for t in data.get("added_tokens", [])}
    ranks: dict[bytes, int] = {}
    for token, i in model["vocab"].items():
        if i in added:
            continue
        try:
            ranks[hf_to_bytes(token)] = int(i)
        except KeyError as e:
            raise ValueError(f"token {token!r} is not in the ByteLevel alphabet") from e
    last = -1
    for m in model.get("merges", []):
        left, right = m.split(" ", 1) if isinstance(m, str) else m
        rank = ranks.get(hf_to_bytes(left) + hf_to_bytes(right))
        if rank is None or rank < last:
            raise ValueError(f"merge {left!r}+{right!r} is out of rank order; not a tiktoken-style BPE")
        last = rank
    return ranks
