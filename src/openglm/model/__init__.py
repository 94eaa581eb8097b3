"""The GLM-4 model: config, presets and the transformer."""

from .config import PRESETS, GLMConfig
from .glm import GLM, KVCache, count_parameters
from .quant import QuantSpec, quantize_model

__all__ = ["GLM", "GLMConfig", "KVCache", "PRESETS", "QuantSpec", "count_parameters", "quantize_model"]
