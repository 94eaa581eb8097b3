"""GLM-4 byte-level BPE tokenizer (tiktoken core, GLM-4 special tokens, HF interop)."""

from .core import GLM4_PAT_STR, StreamDecoder, Tokenizer
from .load import default_tokenizer, load_tokenizer

__all__ = ["GLM4_PAT_STR", "StreamDecoder", "Tokenizer", "default_tokenizer", "load_tokenizer"]
