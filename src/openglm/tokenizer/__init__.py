"""GLM-4 byte-level BPE tokenizer (tiktoken core, GLM-4 special tokens, HF interop)."""

from .core import COPY_FRIENDLY_PAT_STR, GLM4_PAT_STR, StreamDecoder, Tokenizer
from .load import default_tokenizer, load_tokenizer
from .merge import MergeResult, merge_ranks, merge_tokenizer
from .report import compression_report, reference_corpus
from .train import TextStats, digit_groups, reserve_pieces, train_bpe

__all__ = [
    "COPY_FRIENDLY_PAT_STR", "GLM4_PAT_STR", "StreamDecoder", "Tokenizer", "default_tokenizer", "load_tokenizer",
    "MergeResult", "merge_ranks", "merge_tokenizer", "compression_report", "reference_corpus",
    "TextStats", "digit_groups", "reserve_pieces", "train_bpe",
]
