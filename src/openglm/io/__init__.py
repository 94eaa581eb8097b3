"""Checkpoint IO: safetensors layouts (hf Glm/Glm4, original ChatGLM), sharding, conversion."""

from .checkpoint import CheckpointError, convert, load_model, save_model
from .layouts import LAYOUTS

__all__ = ["LAYOUTS", "CheckpointError", "convert", "load_model", "save_model"]
