"""Checkpoint IO: safetensors layouts (hf Glm/Glm4, original ChatGLM), sharding, conversion, quantized checkpoints."""

from .checkpoint import convert, load_model, quantize_checkpoint, save_model
from .files import CheckpointError
from .layouts import LAYOUTS

__all__ = ["LAYOUTS", "CheckpointError", "convert", "load_model", "quantize_checkpoint", "save_model"]
