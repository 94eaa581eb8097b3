"""Damaged inputs never lose records silently: every reader detects a truncated or corrupt file, keeps
what it could read, reports the damage as one ``damaged_file`` reject naming the file, and the run
exits non-zero (and leaves no ``_work/``) unless ``--allow-damaged`` is given (or the recipe says
``allow_damaged: true``).

Each test builds a real damaged file, runs the real pipeline (CLI or Python API) and computes the
records that are actually readable independently of the readers (byte-at-a-time decompression).
"""

import gzip
import json
import random
import zlib

import pytest
import yaml
import zstandard
from typer.testing import CliRunner

from openglm.data.cli import app
from openglm.data.readers import write_parquet
from openglm.data.recipe import RecipeError, load_recipe
from openglm.data.run import DamagedInputError, run_recipe

WORDS = ("river stone paper window quiet lantern orchard harbor meadow silver engine copper violet "
         "thunder garden pencil marble candle saddle bridge").split()


def records(n: int = 200) -> list[dict]:
    """Varied ~1.5 KB records, so a compressed stream spans several blocks and half of it holds some."""
    rng = random.Random(7)
    return [{"id": f"r{i}", "text": f"Record {i}. " + " ".join(rng.choice(WORDS) for _ in range(220))}
            for i in range(n)]


def jsonl_bytes(recs: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in recs).encode()


def readable(data: bytes) -> int:
    """Records a perfect reader gets from decompressed bytes: complete lines that are JSON objects
    with a non-empty text (a line cut by the damage is not a record)."""
    n = 0
    for line in data.split(b"\n")[:-1]:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        n += isinstance(rec, dict) and isinstance(rec.get("text"), str) and bool(rec["text"].strip())
    return n


def prefix(data: bytes, dobj, errors) -> bytes:
    """Everything a decompressor yields before it fails, fed one byte at a time."""
    out = []
    for i in range(len(data)):
        try:
            out.append(dobj.decompress(data[i:i + 1]))
        except errors:
            break
        if dobj.eof:
            break
    return b"".join(out)


def gzip_prefix(data: bytes) -> bytes:
    return prefix(data, zlib.decompressobj(31), zlib.error)


def zstd_prefix(data: bytes) -> bytes:
    return prefix(data, zstandard.ZstdDecompressor().decompressobj(), zstandard.ZstdError)


def write_recipe(tmp_path, name: str, **keys) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"name": "damaged", "output": str(tmp_path / "out"),
                                    "inputs": [{"path": name, "source": "web"}], "stages": [], **keys}))
    return str(path)


def run_cli(tmp_path, name: str, *extra: str, **keys):
    result = CliRunner().invoke(app, ["run", "-q", write_recipe(tmp_path, name, **keys), *extra])
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    return result, report


def damage_rejects(tmp_path) -> list[dict]:
    lines = [json.loads(line) for p in sorted((tmp_path / "out" / "rejects").glob("*.jsonl"))
             for line in p.read_text().splitlines()]
    return [r for r in lines if r["reason"] == "damaged_file"]


def assert_damage_reported(tmp_path, report: dict, name: str, kept: int, what: str) -> None:
    read = report["stages"][0]
    assert read["stage"] == "read"
    assert read["kept"] == kept, read
    assert read["reasons"].get("damaged_file") == 1, read
    assert read["input"] == read["kept"] + read["rejected"]
    (damage,) = damage_rejects(tmp_path)
    assert name in damage["detail"] and what in damage["detail"], damage
    assert len(report["damaged"]) == 1 and name in report["damaged"][0]
    assert not (tmp_path / "out" / "_work").exists() or report.get("allow_damaged")


def assert_failed_naming(result, name: str) -> None:
    assert result.exit_code not in (0, None), result.output
    assert "Aborted" not in result.output and "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if "damaged" in line and name in line]
    assert lines, result.output  # one line names the file and the damage


# -- the reported cases: a truncated .jsonl.zst and .jsonl.gz -------------------------------------------

def _truncated(tmp_path, kind: str) -> tuple[str, int]:
    data = jsonl_bytes(records())
    if kind == "zst":
        packed = zstandard.ZstdCompressor(level=3).compress(data)
        cut = packed[: len(packed) // 2]
        expected = readable(zstd_prefix(cut))
    else:
        packed = gzip.compress(data)
        cut = packed[: len(packed) // 2]
        expected = readable(gzip_prefix(cut))
    name = f"web.jsonl.{kind}"
    (tmp_path / name).write_bytes(cut)
    assert 0 < expected < 200  # the half holds some whole records, and not all of them
    return name, expected


@pytest.mark.parametrize("kind", ["zst", "gz"])
def test_truncated_compressed_jsonl_keeps_readable_records_and_fails_naming_the_file(tmp_path, kind):
    name, expected = _truncated(tmp_path, kind)
    result, report = run_cli(tmp_path, name)
    assert_failed_naming(result, name)
    assert_damage_reported(tmp_path, report, name, expected, "truncated")
    assert not (tmp_path / "out" / "_work").exists()
    assert f"after {expected} records" in damage_rejects(tmp_path)[0]["detail"]


@pytest.mark.parametrize("kind", ["zst", "gz"])
def test_allow_damaged_continues_keeps_the_readable_records_and_still_reports(tmp_path, kind):
    name, expected = _truncated(tmp_path, kind)
    result, report = run_cli(tmp_path, name, "--allow-damaged")
    assert result.exit_code == 0, result.output
    assert name in result.output and "damaged" in result.output  # still said, not silent
    assert_damage_reported(tmp_path, report, name, expected, "truncated")
    docs = [line for p in (tmp_path / "out" / "docs").glob("*.jsonl.zst")
            for line in zstandard.ZstdDecompressor().stream_reader(p.read_bytes()).read().splitlines()]
    assert len(docs) == expected
    assert "damaged_file" in (tmp_path / "out" / "report.md").read_text()


def test_recipe_allow_damaged_continues_and_still_reports(tmp_path):
    name, expected = _truncated(tmp_path, "gz")
    result, report = run_cli(tmp_path, name, allow_damaged=True)
    assert result.exit_code == 0, result.output
    assert name in result.output and "damaged" in result.output  # still said, not silent
    assert_damage_reported(tmp_path, report, name, expected, "truncated")
    assert report["allow_damaged"] is True and "failed" not in report
    assert (tmp_path / "out" / "docs").exists()


def test_cli_flag_wins_over_the_recipe_allow_damaged(tmp_path):
    name, expected = _truncated(tmp_path, "zst")
    result, report = run_cli(tmp_path, name, "--no-allow-damaged", allow_damaged=True)
    assert_failed_naming(result, name)
    assert report["allow_damaged"] is False and not (tmp_path / "out" / "docs").exists()
    result, report = run_cli(tmp_path, name, "--allow-damaged", allow_damaged=False)
    assert result.exit_code == 0, result.output
    assert report["stages"][0]["kept"] == expected
    # and in Python: an explicit argument wins, None (the default) takes the recipe's
    with pytest.raises(DamagedInputError):
        run_recipe(write_recipe(tmp_path, name, allow_damaged=True), allow_damaged=False)
    assert run_recipe(write_recipe(tmp_path, name, allow_damaged=True))["allow_damaged"] is True


def test_recipe_allow_damaged_is_a_bool_and_not_fingerprinted(tmp_path):
    name, _ = _truncated(tmp_path, "gz")
    strict = load_recipe(write_recipe(tmp_path, name))
    allowed = load_recipe(write_recipe(tmp_path, name, allow_damaged=True))
    assert (strict.allow_damaged, allowed.allow_damaged) == (False, True)
    assert strict.fingerprint == allowed.fingerprint  # it does not change the outputs
    with pytest.raises(RecipeError, match="allow_damaged"):
        load_recipe(write_recipe(tmp_path, name, allow_damaged="yes"))


# -- the rest of the class ------------------------------------------------------------------------------

def test_gzip_with_a_corrupted_middle_byte_is_damage(tmp_path):
    packed = bytearray(gzip.compress(jsonl_bytes(records())))
    packed[len(packed) // 2] ^= 0x55
    (tmp_path / "web.jsonl.gz").write_bytes(bytes(packed))
    expected = readable(gzip_prefix(bytes(packed)))
    result, report = run_cli(tmp_path, "web.jsonl.gz")
    assert_failed_naming(result, "web.jsonl.gz")
    assert_damage_reported(tmp_path, report, "web.jsonl.gz", expected, "corrupt gzip")


def test_gzip_with_a_wrong_crc_keeps_every_record_but_is_damage(tmp_path):
    packed = bytearray(gzip.compress(jsonl_bytes(records())))
    packed[-8] ^= 0xFF  # the stored CRC32: every byte decodes, the check fails
    (tmp_path / "web.jsonl.gz").write_bytes(bytes(packed))
    result, report = run_cli(tmp_path, "web.jsonl.gz")
    assert_failed_naming(result, "web.jsonl.gz")
    assert_damage_reported(tmp_path, report, "web.jsonl.gz", 200, "CRC")


@pytest.mark.parametrize("content, what", [(b"", "empty"), (jsonl_bytes(records(5)), "not a zstd")])
def test_empty_or_foreign_zst_is_damage(tmp_path, content, what):
    (tmp_path / "web.jsonl.zst").write_bytes(content)
    result, report = run_cli(tmp_path, "web.jsonl.zst")
    assert_failed_naming(result, "web.jsonl.zst")
    assert_damage_reported(tmp_path, report, "web.jsonl.zst", 0, what)


def test_foreign_gz_is_damage(tmp_path):
    (tmp_path / "web.jsonl.gz").write_bytes(jsonl_bytes(records(5)))
    result, report = run_cli(tmp_path, "web.jsonl.gz")
    assert_failed_naming(result, "web.jsonl.gz")
    assert_damage_reported(tmp_path, report, "web.jsonl.gz", 0, "not a gzip")


def test_truncated_parquet_is_damage(tmp_path):
    write_parquet(tmp_path / "full.parquet", records())
    data = (tmp_path / "full.parquet").read_bytes()
    (tmp_path / "web.parquet").write_bytes(data[: len(data) // 2])
    result, report = run_cli(tmp_path, "web.parquet")
    assert_failed_naming(result, "web.parquet")
    assert_damage_reported(tmp_path, report, "web.parquet", 0, "parquet")  # the footer is gone: nothing


def test_plain_jsonl_cut_mid_record_is_damage_not_just_bad_json(tmp_path):
    data = jsonl_bytes(records())
    cut = data[: len(data) // 2]
    assert not cut.endswith(b"\n")
    (tmp_path / "web.jsonl").write_bytes(cut)
    result, report = run_cli(tmp_path, "web.jsonl")
    assert_failed_naming(result, "web.jsonl")
    assert_damage_reported(tmp_path, report, "web.jsonl", readable(cut), "ends mid-record")
    assert "bad_json" not in report["stages"][0]["reasons"]


def test_plain_jsonl_cut_mid_character_is_damage(tmp_path):
    data = jsonl_bytes([{"text": "第一个文档"}, {"text": "第二个文档"}])
    (tmp_path / "web.jsonl").write_bytes(data[:-5])  # inside the last 文
    result, report = run_cli(tmp_path, "web.jsonl")
    assert_failed_naming(result, "web.jsonl")
    assert_damage_reported(tmp_path, report, "web.jsonl", 1, "ends mid-record")


def test_text_file_cut_mid_character_is_damage(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("完整的文件", encoding="utf-8")
    (tmp_path / "notes" / "b.txt").write_bytes("被截断的文件".encode()[:-1])
    result, report = run_cli(tmp_path, "notes")
    assert_failed_naming(result, "b.txt")
    assert_damage_reported(tmp_path, report, "b.txt", 1, "mid-character")


def test_sound_multi_frame_and_multi_member_files_are_not_damage(tmp_path):
    recs = records(20)
    (tmp_path / "in").mkdir()
    zc = zstandard.ZstdCompressor()
    (tmp_path / "in" / "a.jsonl.zst").write_bytes(zc.compress(jsonl_bytes(recs[:10])) + zc.compress(
        jsonl_bytes(recs[10:])))
    (tmp_path / "in" / "b.jsonl.gz").write_bytes(gzip.compress(jsonl_bytes(recs[:10])) + gzip.compress(
        jsonl_bytes(recs[10:])))
    result, report = run_cli(tmp_path, "in/*.jsonl.*")
    assert result.exit_code == 0, result.output
    assert report["stages"][0]["kept"] == 40 and report["damaged"] == []


def test_python_api_raises_by_default_and_continues_when_allowed(tmp_path):
    name, expected = _truncated(tmp_path, "zst")
    recipe = write_recipe(tmp_path, name)
    with pytest.raises(DamagedInputError, match=name) as info:
        run_recipe(recipe)
    assert info.value.report["stages"][0]["kept"] == expected
    assert not (tmp_path / "out" / "_work").exists()
    report = run_recipe(recipe, allow_damaged=True)
    assert report["stages"][0]["kept"] == expected and len(report["damaged"]) == 1


def test_a_fixed_input_is_read_afresh_after_a_failed_run(tmp_path):
    name, expected = _truncated(tmp_path, "gz")
    recipe = write_recipe(tmp_path, name)
    with pytest.raises(DamagedInputError):
        run_recipe(recipe)
    (tmp_path / name).write_bytes(gzip.compress(jsonl_bytes(records())))
    report = run_recipe(recipe)
    assert report["stages"][0]["kept"] == 200 and report["damaged"] == []
