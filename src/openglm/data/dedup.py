"""Exact dedup (hash of normalised text) and fuzzy dedup (MinHash + LSH + union-find).

MinHash here is vectorised: every character n-gram of a batch of documents is hashed at once with
a rolling polynomial hash over code points, then each of the K hash functions is one
multiply-add-shift over the whole batch and a segmented minimum (``np.minimum.reduceat``).
Chinese has no spaces and short words, so documents that are mostly Han characters are shingled
with shorter n-grams than alphabetic text: with 5-char shingles one edited character breaks five
shingles and 5% edits already push a copy's Jaccard similarity below 0.6.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import xxhash

from .stages.base import BarrierStage, Decision, KeyTable

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_NOT_WORD = re.compile(r"[\W_]+")
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_MAX_BATCH_CHARS = 1 << 21  # bounds the working arrays (a few tens of MB) whatever the doc sizes


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads the polynomial hash over all 64 bits."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def han_share(text: str, sample: int = 2000) -> float:
    head = text[:sample]
    non_space = len(head) - sum(head.count(c) for c in " \n\t")
    return len(_HAN.findall(head)) / max(non_space, 1)


def shingle_text(text: str) -> str:
    """What the shingles are taken from: lower case, whitespace runs collapsed."""
    return " ".join(text.lower().split())


class MinHasher:
    """K-function MinHash over character n-grams; ``ngram_cjk`` for mostly-Han documents."""

    def __init__(self, num_perm: int = 128, ngram: int = 5, ngram_cjk: int = 3, cjk_share: float = 0.3,
                 seed: int = 0):
        self.num_perm, self.ngram, self.ngram_cjk, self.cjk_share = num_perm, ngram, ngram_cjk, cjk_share
        rng = np.random.default_rng(seed)
        # Multiply-add-shift (Dietzfelbinger): a 32-bit key times a random odd 64-bit a, plus b,
        # top 32 bits. 2-universal, and numpy does it in three vector ops without overflow checks.
        self.a = rng.integers(1, 1 << 63, num_perm, dtype=np.uint64) | np.uint64(1)
        self.b = rng.integers(0, 1 << 63, num_perm, dtype=np.uint64)

    def ngram_for(self, text: str) -> int:
        return self.ngram_cjk if han_share(text) >= self.cjk_share else self.ngram

    def signatures(self, texts: list[str]) -> np.ndarray:
        """``uint32[len(texts), num_perm]``; equal texts give equal rows."""
        prepared = [shingle_text(t) for t in texts]
        sigs = np.empty((len(texts), self.num_perm), np.uint32)
        by_n: dict[int, list[int]] = {}
        for i, t in enumerate(prepared):
            by_n.setdefault(self.ngram_for(t), []).append(i)
        for n, idx in by_n.items():
            start = 0
            while start < len(idx):  # chunks keep the arrays small for long documents
                stop, size = start, 0
                while stop < len(idx) and (stop == start or size + len(prepared[idx[stop]]) <= _MAX_BATCH_CHARS):
                    size += len(prepared[idx[stop]])
                    stop += 1
                chunk = idx[start:stop]
                sigs[chunk] = self._signatures_n([prepared[i] for i in chunk], n)
                start = stop
        return sigs

    def _shingle_hashes(self, texts: list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
        """32-bit hashes of every n-gram of every text (concatenated) and each text's first index."""
        padded = [t.ljust(n, "\0") for t in texts]  # a text shorter than n is one shingle
        cps = np.frombuffer("".join(padded).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        lengths = np.array([len(t) for t in padded], np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        span = len(cps) - n + 1
        h = np.zeros(span, np.uint64)
        for k in range(n):
            h = h * np.uint64(0x100000001B3) + cps[k:k + span]
        counts = lengths - n + 1  # n-grams that stay inside their own text
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
        valid = np.arange(counts.sum()) - np.repeat(offsets - starts, counts)
        return _mix64(h[valid]) >> np.uint64(32), offsets

    def _signatures_n(self, texts: list[str], n: int) -> np.ndarray:
        x, offsets = self._shingle_hashes(texts, n)
        out = np.empty((len(texts), self.num_perm), np.uint32)
        shift = np.uint64(32)
        for i in range(self.num_perm):
            out[:, i] = np.minimum.reduceat((self.a[i] * x + self.b[i]) >> shift, offsets)
        return out


class UnionFind:
    """Union by smallest index: a cluster's root is its earliest document."""

    def __init__(self, n: int):
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return int(i)

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


def lsh_candidates(sigs: np.ndarray, bands: int) -> np.ndarray:
    """Pairs ``(i, j), i < j`` sharing at least one band; each bucket links its members to the first
    and to their neighbour, which is enough for union-find after verification."""
    n, k = sigs.shape
    if k % bands:
        raise ValueError(f"fuzzy_dedup: num_perm {k} is not a multiple of bands {bands}")
    rows = k // bands
    pairs = []
    for b in range(bands):
        h = np.zeros(n, np.uint64)
        for col in sigs[:, b * rows:(b + 1) * rows].T.astype(np.uint64):
            h = _mix64(h ^ col)
        order = np.argsort(h, kind="stable")
        hs = h[order]
        same_as_prev = np.concatenate([[False], hs[1:] == hs[:-1]])
        if not same_as_prev.any():
            continue
        run_id = np.cumsum(~same_as_prev) - 1
        first_of_run = order[np.flatnonzero(~same_as_prev)][run_id]
        members = np.flatnonzero(same_as_prev)
        pairs.append(np.stack([first_of_run[members], order[members]], 1))
        pairs.append(np.stack([order[members - 1], order[members]], 1))
    if not pairs:
        return np.zeros((0, 2), np.int64)
    allp = np.concatenate(pairs)
    allp = np.sort(allp, axis=1)
    allp = allp[allp[:, 0] != allp[:, 1]]
    return np.unique(allp, axis=0)


def cluster(sigs: np.ndarray, bands: int, threshold: float) -> tuple[np.ndarray, int]:
    """Cluster root of every document (itself when unique) and the number of verified pairs."""
    pairs = lsh_candidates(sigs, bands)
    uf = UnionFind(len(sigs))
    verified = 0
    if len(pairs):
        sim = (sigs[pairs[:, 0]] == sigs[pairs[:, 1]]).mean(axis=1)
        good = pairs[sim >= threshold]
        verified = len(good)
        for i, j in good:
            uf.union(int(i), int(j))
    return np.array([uf.find(i) for i in range(len(sigs))]), verified


@dataclass
class ExactDedup(BarrierStage):
    """Keeps the first document of each group whose text is equal after case folding and removing
    whitespace and punctuation."""

    def key(self, row: dict) -> bytes:
        return xxhash.xxh3_128_digest(_NOT_WORD.sub("", row["text"].casefold()).encode("utf-8"))

    def decide(self, table: KeyTable) -> Decision:
        first: dict[bytes, int] = {}
        entries = []
        for i, key in enumerate(table.keys):
            j = first.setdefault(key, i)
            if j != i:
                entries.append((table.ords[i], 0, "exact_duplicate", f"of {table.ids[j]}"))
        return Decision.build(entries, {"duplicates": len(entries)})


@dataclass
class FuzzyDedup(BarrierStage):
    """MinHash + LSH near-duplicate removal; one document (the earliest) is kept per cluster."""

    num_perm: int = 128
    bands: int = 32
    threshold: float = 0.6  # estimated Jaccard similarity a candidate pair must reach
    ngram: int = 5
    ngram_cjk: int = 3
    seed: int = 0

    def hasher(self) -> MinHasher:
        hasher = getattr(self, "_hasher", None)
        if hasher is None:
            hasher = self._hasher = MinHasher(self.num_perm, self.ngram, self.ngram_cjk, seed=self.seed)
        return hasher

    def keys(self, rows: list[dict]) -> list[bytes]:
        """Batched form of ``key``: vectorising over documents is where the speed comes from."""
        sigs = self.hasher().signatures([r["text"] for r in rows])
        return [s.tobytes() for s in sigs]

    def key(self, row: dict) -> bytes:
        return self.keys([row])[0]

    def decide(self, table: KeyTable) -> Decision:
        if not table.keys:
            return Decision.build([], {"clusters": 0, "near_duplicates": 0})
        sigs = np.frombuffer(b"".join(table.keys), np.uint32).reshape(len(table.keys), self.num_perm)
        roots, verified = cluster(sigs, self.bands, self.threshold)
        dup = np.flatnonzero(roots != np.arange(len(roots)))
        entries = [(table.ords[i], 0, "near_duplicate", f"of {table.ids[roots[i]]}") for i in dup]
        summary = {"clusters": int(len(np.unique(roots[dup]))), "near_duplicates": len(entries),
                   "verified_pairs": verified}
        return Decision.build(entries, summary)
