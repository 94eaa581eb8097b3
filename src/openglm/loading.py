"""A model and tokenizer ready for inference: a checkpoint, a random-weight preset, or the embedded model.

Shared by every front end (the CLI's generate/chat/serve, the agent and eval commands), below
all of them, so none imports another to load a model. torch is imported on first use only.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path

from .embedded import EMBEDDED_DIR

DTYPES = ("auto", "float32", "bfloat16", "float16")


class Quantize(str, Enum):
    """The CLIs' --quantize choices: weight-only INT8 per channel, INT4 in groups of 64."""

    int8 = "int8"
    int4 = "int4"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def load_for_inference(model_dir: str | Path | None = None, preset: str | None = None, dtype: str = "auto",
                       compiled: bool = False, say: Callable[[str], None] = _stderr, quantize: str | None = None):
    """(model, tokenizer): a checkpoint directory; else a random-weight `preset`; else the embedded
    nano agent model shipped in the package (random `nano` weights if none is shipped).

    dtype: one of DTYPES (auto: as stored). quantize: "int8" or "int4", weights quantized as they
    are read (a quantized checkpoint needs none: it loads as it was written). compiled: decode through a compiled step
    (infer.compile_decoding). `say` gets the notes meant for a person (random weights, compile time).
    A bad checkpoint raises io.CheckpointError (a ValueError) naming the file at fault."""
    dtype = getattr(dtype, "value", dtype)  # a str Enum from a CLI
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    quantize = getattr(quantize, "value", quantize)
    if quantize is not None and quantize not in Quantize.__members__:
        raise ValueError(f"unknown quantization {quantize!r}; choose one of {', '.join(Quantize.__members__)}")
    model, tok = _load(Path(model_dir) if model_dir is not None else None, preset, dtype, quantize, say)
    if compiled:
        from .infer import compile_decoding

        compile_decoding(model)
        say("the decoding step compiles on first use: ~30-60 s, again for each new batch size or "
            "context bucket (256, 512, 1024, ... tokens)")
    return model, tok


def _load(model_dir: Path | None, preset: str | None, dtype: str, quantize: str | None, say: Callable[[str], None]):
    import torch

    from .io import load_model
    from .model import GLM, GLMConfig
    from .tokenizer import default_tokenizer, load_tokenizer

    if model_dir is None and preset is None and (EMBEDDED_DIR / "config.json").exists():
        model_dir = EMBEDDED_DIR
    if model_dir is None:
        preset = preset or "nano"
        say(f"using the '{preset}' preset with RANDOM weights (its output is noise; pass --model DIR for a "
            "trained checkpoint)")
        torch.manual_seed(0)
        cfg, tok = GLMConfig.from_preset(preset), default_tokenizer()
        if quantize:  # quantized tensor by tensor: a 9B preset never exists in full precision
            from .model.quant import QuantSpec, random_quantized_glm

            float_dtype = torch.float32 if dtype == "auto" else getattr(torch, dtype)
            model = random_quantized_glm(cfg, QuantSpec.named(quantize), float_dtype)
        else:
            model = GLM(cfg)
        if model.config.vocab_size < tok.vocab_size:
            raise ValueError(f"preset {preset} has {model.config.vocab_size} embeddings, "
                             f"the default tokenizer needs {tok.vocab_size}")
        return model.for_inference(), tok
    model = load_model(model_dir, dtype=None if dtype == "auto" else getattr(torch, dtype), quantize=quantize)
    tok = load_tokenizer(model_dir)
    if dtype != "auto":  # an explicit dtype is kept even where this CPU runs it slowly
        return model.eval().pack_weights(), tok
    return model.for_inference(), tok
