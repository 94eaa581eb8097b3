"""Checkpoint IO: safetensors layouts (hf Glm/Glm4, original ChatGLM), sharding, conversion, quantized checkpoints."""

from .checkpoint import CheckpointError, convert, load_model, save_model
from .layouts import LAYOUTS
from .quantized import quantize_checkpoint

__all__ = ["LAYOUTS", "CheckpointError", "convert", "load_model", "quantize_checkpoint", "save_model"]
