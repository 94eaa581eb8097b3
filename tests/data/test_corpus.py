from openglm.data.corpus import load_sample, sample_path


def test_sample_corpus_splits_are_disjoint_and_cover_the_languages():
    train, heldout = load_sample("train"), load_sample("heldout")
    assert {d["lang"] for d in train} == {"zh", "en", "code"}
    assert {d["lang"] for d in heldout} == {"zh", "en", "code"}
    assert not {d["id"] for d in train} & {d["id"] for d in heldout}
    assert not {d["text"] for d in train} & {d["text"] for d in heldout}
    # held-out sources the tokenizer comparison relies on
    assert {(d["lang"], d["source"]) for d in heldout} == {
        ("zh", "peoples_daily_1998"), ("en", "python_docs"), ("code", "python_stdlib")}
    for lang in ("zh", "en", "code"):
        assert sum(len(d["text"].encode()) for d in load_sample("heldout", lang=lang)) > 300_000


def test_sample_corpus_stays_small_and_filters_work():
    total = sum(sample_path(s).stat().st_size for s in ("train", "heldout"))
    assert total < 8_000_000
    zh = load_sample("heldout", lang="zh", source="peoples_daily_1998")
    assert zh and all(d["source"] == "peoples_daily_1998" for d in zh)
    assert all(set(d) >= {"id", "source", "lang", "text"} for d in zh)
