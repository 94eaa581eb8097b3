"""Inference: sampling and KV-cached generation."""

from .generate import Completion, ContextLengthError, complete, generate, generate_ids
from .sampling import Sampling

__all__ = ["Completion", "ContextLengthError", "Sampling", "complete", "generate", "generate_ids"]
