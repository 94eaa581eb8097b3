"""Inference: sampling, KV-cached generation, and compiled decoding steps."""

from .compiled import compile_decoding
from .generate import Completion, ContextLengthError, complete, generate, generate_ids
from .prompt_cache import PromptCache
from .sampling import Sampling

__all__ = ["Completion", "ContextLengthError", "PromptCache", "Sampling", "compile_decoding", "complete", "generate",
           "generate_ids"]
