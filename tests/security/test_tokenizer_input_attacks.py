"""A damaged training file never trains a tokenizer silently on part of it, nor ends in a bare
``Aborted.``: the real trainer (``rustbpe``, small vocabularies) and the real ``openglm tokenizer``
CLI get real truncated or corrupt ``.gz``/``.zst`` files and stop with one error line naming the file.

The decoding is the data pipeline's (``openglm.data.readers.open_binary``), imported lazily so that
``import openglm.tokenizer`` stays free of pyarrow and ``openglm.data`` never imports the tokenizer.
"""

import gzip
import json
import random
import subprocess
import sys

import pytest
import zstandard
from typer.testing import CliRunner

from openglm.tokenizer.cli import app
from openglm.tokenizer.train import DamagedTrainingFile, TextStats, read_file_texts, train_bpe

WORDS = ("river stone paper window quiet lantern orchard harbor meadow silver engine copper violet "
         "thunder garden pencil marble candle saddle bridge 人民 日报 新闻 文字 压缩").split()
VOCAB = 300


def texts(n: int = 200) -> list[str]:
    rng = random.Random(11)
    return [f"Line {i}. " + " ".join(rng.choice(WORDS) for _ in range(120)) for i in range(n)]


def jsonl_bytes(lines: list[str]) -> bytes:
    return "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in lines).encode()


def truncated_gz(tmp_path, name: str = "train.jsonl.gz"):
    packed = gzip.compress(jsonl_bytes(texts()))
    path = tmp_path / name
    path.write_bytes(packed[: len(packed) // 2])
    return path


def assert_one_error_line(result, path, what: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Aborted" not in result.output and "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    assert str(path) in lines[0] and what in lines[0], lines[0]


def test_cli_train_on_a_truncated_gz_fails_with_one_line_naming_the_file(tmp_path):
    path = truncated_gz(tmp_path)
    out = tmp_path / "zh.bpe"
    result = CliRunner().invoke(app, ["train", "-i", str(path), "--vocab-size", str(VOCAB), "--out", str(out)])
    assert_one_error_line(result, path, "truncated gzip stream")
    assert not out.exists()  # no vocabulary learned from half a file


def test_cli_train_names_the_damaged_file_among_sound_ones(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("\n".join(texts(50)), encoding="utf-8")
    bad = truncated_gz(tmp_path / "in", "b.txt.gz")
    out = tmp_path / "zh.bpe"
    result = CliRunner().invoke(app, ["train", "-i", str(tmp_path / "in"), "--vocab-size", str(VOCAB),
                                      "--out", str(out)])
    assert_one_error_line(result, bad, "truncated gzip stream")
    assert not out.exists()


def test_cli_report_on_a_truncated_gz_fails_with_one_line(tmp_path):
    path = truncated_gz(tmp_path)
    result = CliRunner().invoke(app, ["report", "--tokenizer", "default", "--text", f"zh={path}"])
    assert_one_error_line(result, path, "truncated gzip stream")


def _corrupt_gz(tmp_path):
    packed = bytearray(gzip.compress(jsonl_bytes(texts())))
    packed[len(packed) // 2] ^= 0x55
    path = tmp_path / "train.jsonl.gz"
    path.write_bytes(bytes(packed))
    return path, "corrupt gzip"


def _bad_crc_gz(tmp_path):
    packed = bytearray(gzip.compress(jsonl_bytes(texts())))
    packed[-8] ^= 0xFF  # every byte decodes; the stored CRC32 does not match
    path = tmp_path / "train.jsonl.gz"
    path.write_bytes(bytes(packed))
    return path, "CRC"


def _foreign_gz(tmp_path):
    path = tmp_path / "train.jsonl.gz"
    path.write_bytes(jsonl_bytes(texts(5)))
    return path, "not a gzip"


def _truncated_zst(tmp_path):
    packed = zstandard.ZstdCompressor().compress(jsonl_bytes(texts()))
    path = tmp_path / "train.jsonl.zst"
    path.write_bytes(packed[: len(packed) // 2])
    return path, "truncated zstd"


@pytest.mark.parametrize("make", [_corrupt_gz, _bad_crc_gz, _foreign_gz, _truncated_zst])
def test_trainer_raises_naming_the_file_for_every_kind_of_damage(tmp_path, make):
    path, what = make(tmp_path)
    with pytest.raises(DamagedTrainingFile, match=what) as info:
        train_bpe([path], VOCAB, stats=TextStats())
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)  # what the CLI turns into an `error:` line


def test_the_error_counts_the_lines_read_before_the_damage(tmp_path):
    path = truncated_gz(tmp_path, "train.txt.gz")
    with pytest.raises(DamagedTrainingFile) as info:
        list(read_file_texts(path, TextStats()))
    n = int(str(info.value).rsplit(" after ", 1)[1].split()[0])
    assert 0 < n < len(texts())


def test_sound_multi_member_gz_and_multi_frame_zst_train_like_plain_text(tmp_path):
    lines = texts(60)
    zc = zstandard.ZstdCompressor()
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(jsonl_bytes(lines[:30])) + gzip.compress(
        jsonl_bytes(lines[30:])))
    (tmp_path / "b.jsonl.zst").write_bytes(zc.compress(jsonl_bytes(lines[:30])) + zc.compress(
        jsonl_bytes(lines[30:])))
    stats = TextStats()
    got = train_bpe([tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.zst"], VOCAB, stats=stats)
    assert stats.texts == 120 and stats.n_rejected == 0
    assert got == train_bpe(lines + lines, VOCAB)


def test_no_import_cycle_and_the_tokenizer_stays_light():
    code = ("import sys, openglm.tokenizer.train; "
            "assert 'openglm.data.readers' not in sys.modules and 'pyarrow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
    code = "import sys, openglm.data.readers; assert not any(m.startswith('openglm.tokenizer') for m in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)
