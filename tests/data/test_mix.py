import random

import pytest

from openglm.data.mix import Mix
from openglm.data.records import make_row
from openglm.data.stages.base import KeyTable


def table_of(sizes: dict[str, int], seed: int = 0) -> KeyTable:
    rng, table, i = random.Random(seed), KeyTable(), 0
    for source, n_docs in sizes.items():
        for _ in range(n_docs):
            row = make_row(i, f"{source}-{i}", source, "x", "zh" if source == "news" else "en")
            row["_tokens"] = rng.randint(50, 150)
            table.add(row)
            i += 1
    return table


def achieved(mix: Mix, table: KeyTable) -> dict[str, float]:
    decision = mix.decide(table)
    out: dict[str, int] = {}
    for ord_, source, tokens in zip(table.ords, table.sources, table.tokens):
        out[source] = out.get(source, 0) + decision.lookup(ord_)[0] * tokens
    total = sum(out.values())
    return {s: n / total for s, n in out.items()}, total


def test_target_mixture_is_reached_by_tokens():
    table = table_of({"news": 4000, "books": 500, "code": 1500})
    total_in = sum(table.tokens)
    target = {"news": 0.4, "books": 0.35, "code": 0.25}
    shares, total = achieved(Mix(target=target, total_tokens=total_in), table)
    for source, share in target.items():
        assert shares[source] == pytest.approx(share, abs=0.015)
    assert total == pytest.approx(total_in, rel=0.03)


def test_weights_upsample_and_downsample_deterministically():
    table = table_of({"news": 2000, "books": 300})
    mix = Mix(weights={"books": 2.5, "news": 0.5})
    first, second = mix.decide(table), mix.decide(table)
    assert first.ords.tolist() == second.ords.tolist() and first.mult.tolist() == second.mult.tolist()
    mult = {o: first.lookup(o)[0] for o in table.ords}
    books = [mult[o] for o, s in zip(table.ords, table.sources) if s == "books"]
    news = [mult[o] for o, s in zip(table.ords, table.sources) if s == "news"]
    assert set(books) == {2, 3} and sum(books) / len(books) == pytest.approx(2.5, abs=0.1)
    assert set(news) == {0, 1} and sum(news) / len(news) == pytest.approx(0.5, abs=0.05)
    assert Mix(weights={"books": 2.5, "news": 0.5}, seed=1).decide(table).ords.tolist() != first.ords.tolist()


def test_mix_validates_its_options():
    with pytest.raises(ValueError, match="exactly one"):
        Mix()
    with pytest.raises(ValueError, match="sum to 1"):
        Mix(target={"a": 0.5, "b": 0.2})
    with pytest.raises(ValueError, match="no surviving document"):
        Mix(target={"news": 0.5, "wiki": 0.5}).decide(table_of({"news": 10}))
