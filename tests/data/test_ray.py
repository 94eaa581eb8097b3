"""The Ray Data engine gives the same outputs as the local engine (one local Ray start, 2 CPUs)."""

import pytest

from openglm.data.run import run_recipe

pytest.importorskip("ray")

STAGES = ["normalize", "langid", "quality", "pii", "exact_dedup", "fuzzy_dedup",
          {"mix": {"weights": {"python_stdlib": 1.5}}}, {"pack": {"tokens_per_shard": 10_000}}]


def tree_bytes(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "pack_state.json"}


@pytest.mark.slow
def test_ray_engine_writes_the_same_shards_docs_and_rejects_as_local(tmp_path, sample_docs, write_jsonl,
                                                                     write_recipe):
    # Several input files, so Ray really runs several tasks; plus a broken line and a duplicate.
    for k in range(3):
        write_jsonl(tmp_path / f"in{k}.jsonl", sample_docs[k::3] + [dict(sample_docs[0], id=f"copy{k}")])
    with open(tmp_path / "in1.jsonl", "a") as fh:
        fh.write('{"text": broken\n')
    reports = {}
    for engine in ("local", "ray"):
        recipe = write_recipe(tmp_path / f"{engine}.yaml", [{"path": "in*.jsonl"}], STAGES, tmp_path / engine,
                              docs_per_shard=50)
        reports[engine] = run_recipe(recipe, engine=engine, num_cpus=2)
    assert reports["ray"]["engine"] == "ray"
    assert reports["ray"]["stages"] == reports["local"]["stages"]
    local, ray_out = tmp_path / "local", tmp_path / "ray"
    for sub in ("tokens", "docs", "rejects"):
        assert tree_bytes(ray_out / sub) == tree_bytes(local / sub), sub
    assert len(tree_bytes(local / "tokens")) > 4
