"""Where the shipped default model and its document collection live, and how it was trained to search.

Plain constants with no imports of ours, so any layer (the CLIs, the loader, the speedrun that
installs the model, the synthetic data that trained it) can name them without importing another.
"""

from pathlib import Path

_ASSETS = Path(__file__).resolve().parent / "assets"

EMBEDDED_DIR = _ASSETS / "nano_agent"  # the model `openglm speedrun --install` writes
DOCS_DIR = _ASSETS / "agent_docs"  # the offline collection its browser searches
BROWSER_RESULTS = 4  # results per search it was trained on: short enough observations for a nano model
