"""Fuzzy dedup on planted near-duplicates (~5% of characters or words edited), per language."""

import itertools

import numpy as np
import pytest

from openglm.data.corpus import load_sample
from openglm.data.dedup import ExactDedup, FuzzyDedup, MinHasher
from openglm.data.perturb import plant
from openglm.data.records import make_row
from openglm.data.stages.base import KeyTable


def char_shingles(text: str, n: int) -> set[str]:
    return {text[i:i + n] for i in range(max(1, len(text) - n + 1))}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b)


def base_docs(lang: str, n: int) -> list[dict]:
    """1-2 KB slices from the middle of real documents, minus any pair that is already similar
    (the standard library holds generated near-copies, e.g. the encodings.cp* modules)."""
    docs = []
    for d in load_sample("train", lang=lang) + load_sample("heldout", lang=lang):
        raw = d["text"].encode()
        if len(raw) >= 3000:
            mid = len(raw) // 2
            docs.append({"id": d["id"], "lang": lang, "text": raw[mid - 750:mid + 750].decode("utf-8", "ignore")})
        if len(docs) == n:
            break
    sets = [char_shingles(d["text"], 4) for d in docs]
    similar = {j for i, j in itertools.combinations(range(len(docs)), 2) if jaccard(sets[i], sets[j]) > 0.3}
    return [d for k, d in enumerate(docs) if k not in similar]


def dedup_pairs(stage: FuzzyDedup, docs: list[dict]) -> set[tuple[str, str]]:
    """(kept, removed) id pairs decided by the stage, run as the pipeline runs it."""
    rows = [make_row(i, d["id"], "s", d["text"], d["lang"]) for i, d in enumerate(docs)]
    table = KeyTable()
    for row, key in zip(rows, stage.keys(rows)):
        row["_key"] = key
        table.add(row)
    decision = stage.decide(table)
    ids = {r["_ord"]: r["id"] for r in rows}
    return {(detail.removeprefix("of "), ids[int(o)]) for o, detail in zip(decision.ords, decision.details)}


@pytest.mark.parametrize("lang", ["zh", "en", "code"])
def test_planted_near_duplicates_precision_and_recall(lang):
    base = base_docs(lang, 220 if lang != "code" else 160)
    assert len(base) >= 60
    docs, planted = plant(base, fraction=0.5, rate=0.05, seed=7)
    found = dedup_pairs(FuzzyDedup(), docs)
    true_positive = len(found & planted)
    precision, recall = true_positive / max(len(found), 1), true_positive / len(planted)
    assert precision >= 0.95 and recall >= 0.90, (lang, precision, recall, len(planted))


def test_minhash_estimates_jaccard_and_handles_edge_cases():
    hasher = MinHasher(num_perm=256, ngram=5, ngram_cjk=3, seed=1)
    a = "the quick brown fox jumps over the lazy dog " * 3 + "and keeps running through the forest"
    b = a.replace("lazy", "sleepy").replace("forest", "field")
    sigs = hasher.signatures([a, b, "", "ab", a])
    estimate = (sigs[0] == sigs[1]).mean()
    truth = jaccard(char_shingles(" ".join(a.split()), 5), char_shingles(" ".join(b.split()), 5))
    assert abs(estimate - truth) < 0.1
    assert (sigs[0] == sigs[4]).all() and sigs.dtype == np.uint32 and sigs.shape == (5, 256)
    assert hasher.ngram_for("这是中文文本" * 5) == 3 and hasher.ngram_for("english text") == 5


def test_exact_dedup_keeps_the_first_of_texts_equal_up_to_case_space_and_punctuation():
    texts = ["Hello, World!", "hello world", "HELLO   WORLD.", "hello world again", "你好，世界", "你好世界"]
    rows = [make_row(i, f"d{i}", "s", t) for i, t in enumerate(texts)]
    stage, table = ExactDedup(), KeyTable()
    for r in rows:
        r["_key"] = stage.key(r)
        table.add(r)
    decision = stage.decide(table)
    assert decision.ords.tolist() == [1, 2, 5]
    assert decision.details == ["of d0", "of d0", "of d4"]
