"""The layers of docs/architecture.md hold: `lint-imports` checks the contracts in pyproject's
[tool.importlinter] (layer order, no import cycles at any depth, no torch in the chat protocol)."""

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    exe = Path(sys.executable).with_name("lint-imports")
    command = str(exe) if exe.exists() else shutil.which("lint-imports")
    assert command, "lint-imports is missing: pip install -e '.[test]'"
    p = subprocess.run([command, "--no-cache", "--no-logo"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "0 broken" in p.stdout
