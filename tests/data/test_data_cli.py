import json

from typer.testing import CliRunner

from openglm.data.cli import app


def test_cli_runs_a_recipe_and_writes_the_report(tmp_path, sample_docs, write_jsonl, write_recipe):
    write_jsonl(tmp_path / "in.jsonl", sample_docs[:60] + sample_docs[-20:])
    recipe = write_recipe(tmp_path / "r.yaml", [{"path": "in.jsonl", "source": "mixed"}],
                          ["normalize", "langid", "quality", "fuzzy_dedup", {"pack": {"tokens_per_shard": 50_000}}],
                          tmp_path / "out")
    result = CliRunner().invoke(app, ["run", str(recipe)])
    assert result.exit_code == 0, result.output
    assert "fuzzy_dedup" in result.output and "packed" in result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [s["stage"] for s in report["stages"]] == ["read", "normalize", "langid", "quality", "fuzzy_dedup"]
    assert set(report["stages"][-1]["docs_by_lang"]) == {"zh", "en"}  # code reads as English without a given lang
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| quality |" in md and "Packed" in md
    png = (tmp_path / "out" / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    shown = CliRunner().invoke(app, ["inspect", str(tmp_path / "out" / "tokens")])
    assert shown.exit_code == 0 and f"{report['pack']['n_docs']:,} documents" in shown.output


def test_cli_reports_recipe_errors_clearly(tmp_path, write_recipe):
    (tmp_path / "in.jsonl").write_text('{"text": "x"}\n')
    bad = write_recipe(tmp_path / "bad.yaml", [{"path": "in.jsonl"}], [{"qualty": {}}], tmp_path / "out")
    result = CliRunner().invoke(app, ["run", str(bad)])
    assert result.exit_code == 2 and "unknown stage 'qualty'" in result.output
    bad_opt = write_recipe(tmp_path / "b2.yaml", [{"path": "in.jsonl"}], [{"fuzzy_dedup": {"treshold": 1}}],
                           tmp_path / "out")
    result = CliRunner().invoke(app, ["run", str(bad_opt)])
    assert result.exit_code == 2 and "no option(s) ['treshold']" in result.output
    missing = write_recipe(tmp_path / "b3.yaml", [{"path": "nope/*.jsonl"}], ["normalize"], tmp_path / "out")
    result = CliRunner().invoke(app, ["run", str(missing)])
    assert result.exit_code == 2 and "matches no file" in result.output
