"""Extending a base BPE vocabulary (cl100k_base) with tokens learned elsewhere (a Chinese BPE).

New tokens get ranks after every base rank, so each base token keeps its id.
tiktoken's BPE builds a token only by merging two adjacent tokens, always the
lowest-ranked pair first; a new token is therefore usable only if that
procedure, run on its bytes with the vocabulary built so far, stops at exactly
two tokens (which the new, highest rank then merges). Candidates are taken in
the order they were learned, each checked against the vocabulary as it stands;
those that fail are dropped and reported. Tokens added later have higher ranks
and so cannot change how an earlier token is built.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .core import GLM4_PAT_STR, Tokenizer, glm4_special_tokens, read_rank_file

# GLM-4's size: 151329 BPE ranks (cl100k's 100256 + 51073 added) + 14 special tokens.
GLM4_VOCAB_SIZE = 151343


def bpe_parts(ranks: Mapping[bytes, int], piece: bytes) -> list[bytes]:
    """tiktoken's merge procedure on one piece, without its whole-piece shortcut.

    Repeatedly merges the adjacent pair whose concatenation has the lowest rank
    (leftmost on ties) until no adjacent pair is a token.
    """
    parts = [piece[i : i + 1] for i in range(len(piece))]
    while len(parts) > 1:
        best_rank, best_i = None, -1
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and (best_rank is None or rank < best_rank):
                best_rank, best_i = rank, i
        if best_rank is None:
            break
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    return parts


@dataclass
class MergeResult:
    """The merged ranks and an account of every candidate token."""

    ranks: dict[bytes, int]
    base_ranks: int  # ranks taken over unchanged from the base
    added: list[bytes]  # new tokens, in rank order (rank = base_ranks + index)
    already_in_base: int  # candidates the base already had
    dropped: list[bytes]  # candidates no two-token merge can form in the merged vocabulary
    unused: int  # candidates never considered because the vocabulary was full
    requested_ranks: int

    @property
    def short_by(self) -> int:
        """Ranks missing from the requested size because the candidates ran out."""
        return self.requested_ranks - len(self.ranks)

    def summary(self) -> dict:
        return {
            "base_ranks": self.base_ranks,
            "added": len(self.added),
            "already_in_base": self.already_in_base,
            "dropped": len(self.dropped),
            "unused": self.unused,
            "n_ranks": len(self.ranks),
            "short_by": self.short_by,
        }


def merge_ranks(base: Mapping[bytes, int], add: Mapping[bytes, int], n_ranks: int) -> MergeResult:
    """Append tokens of ``add`` (in ``add``'s rank order) after ``base`` until there are ``n_ranks`` ranks."""
    if not base:
        raise ValueError("base vocabulary is empty")
    missing = [b for b in range(256) if bytes([b]) not in base]
    if missing:
        raise ValueError(f"base vocabulary lacks {len(missing)} single-byte tokens, e.g. {missing[:4]}")
    base_ranks = max(base.values()) + 1
    if base_ranks != len(base):
        raise ValueError(f"base ranks are not contiguous: {len(base)} tokens, highest rank {base_ranks - 1}")
    if n_ranks < base_ranks:
        raise ValueError(f"requested {n_ranks} ranks, fewer than the base's {base_ranks}")

    merged = dict(base)
    added: list[bytes] = []
    dropped: list[bytes] = []
    present = 0
    candidates = sorted(add.items(), key=lambda kv: kv[1])
    for pos, (token, _) in enumerate(candidates):
        if len(merged) >= n_ranks:
            unused = len(candidates) - pos
            break
        if token in merged:
            present += 1
        elif len(bpe_parts(merged, token)) == 2:
            merged[token] = len(merged)
            added.append(token)
        else:
            dropped.append(token)
    else:
        unused = 0
    return MergeResult(merged, base_ranks, added, present, dropped, unused, n_ranks)


def merge_tokenizer(
    base: Mapping[bytes, int],
    add: Mapping[bytes, int],
    vocab_size: int = GLM4_VOCAB_SIZE,
    special_tokens: Sequence[str] | None = None,
    pat_str: str = GLM4_PAT_STR,
    name: str = "openglm-merged",
) -> tuple[Tokenizer, MergeResult]:
    """A GLM-4-style tokenizer: merged ranks, then the special tokens (GLM-4's 14 by default).

    ``vocab_size`` counts every id, specials included.
    """
    specials = list(special_tokens) if special_tokens is not None else glm4_special_tokens()
    result = merge_ranks(base, add, vocab_size - len(specials))
    return Tokenizer(result.ranks, pat_str=pat_str, special_tokens=specials, name=name), result


def merge_files(
    base_path: str | Path, add_path: str | Path, out_dir: str | Path, vocab_size: int = GLM4_VOCAB_SIZE
) -> tuple[Tokenizer, MergeResult]:
    """Merge two rank files and save the tokenizer (tokenizer.model, tokenizer.json, ...) in ``out_dir``.

    ``merge_report.json`` there lists the counts and every dropped token.
    """
    tok, result = merge_tokenizer(read_rank_file(base_path), read_rank_file(add_path), vocab_size,
                                  name=Path(out_dir).name or "openglm-merged")
    out = tok.save(out_dir)
    report = {
        **result.summary(),
        "base": str(base_path),
        "add": str(add_path),
        "vocab_size": tok.vocab_size,
        "dropped_tokens": [t.decode("utf-8", errors="backslashreplace") for t in result.dropped],
    }
    (out / "merge_report.json").write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return tok, result
