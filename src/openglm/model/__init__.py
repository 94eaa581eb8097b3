"""The GLM-4 model: config, presets and the transformer."""

from .config import PRESETS, GLMConfig
from .glm import GLM, KVCache, count_parameters

__all__ = ["GLM", "GLMConfig", "KVCache", "PRESETS", "count_parameters"]
