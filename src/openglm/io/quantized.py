"""Quantized checkpoints: the writer behind `checkpoint.quantize_checkpoint`, and the reader.

A quantized checkpoint is a folder like any other (config.json, safetensors shards, the
tokenizer files); config.json is the source's Hugging Face config plus an
``openglm_quantization`` object (`QuantSpec.to_json`), and the tensors carry openglm's own
names: ``layers.{i}.attn.qkv.qweight`` / ``.scales`` / ``.zeros`` for quantized weights (the
canonical form of model/quant.py), ``layers.{i}.attn_norm.weight`` and so on for the rest.
Neither side ever holds the full-precision model: each weight is read, quantized and let go.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..model.config import GLMConfig
from ..model.quant import QuantSpec, canonical_shapes, is_quantized_name, quantized_glm
from .files import INDEX, SAFETENSORS_DTYPES, CheckpointError, read_unmapped, usual_mode

QUANT_KEY = "openglm_quantization"


def float_shapes_of(cfg: GLMConfig) -> dict[str, tuple[int, ...]]:
    """name -> shape of a full-precision GLM's state dict (a tied head listed under both names)."""
    from ..model.glm import GLM

    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in GLM(cfg).state_dict().items()}


def expected_quantized(cfg: GLMConfig, spec: QuantSpec, float_shapes: dict[str, tuple[int, ...]]) -> dict:
    """name -> (shape, dtype or None for 'the checkpoint's float dtype') of a quantized checkpoint."""
    want = {}
    for name, shape in float_shapes.items():
        if is_quantized_name(name, spec):
            module = name.removesuffix(".weight")
            want.update({f"{module}.{k}": v for k, v in canonical_shapes(shape[0], shape[1], spec).items()})
        else:
            want[name] = (tuple(shape), None)
    return want


def write_quantized(state: dict[str, torch.Tensor], raw_config: dict, spec: QuantSpec, dst: Path,
                    max_shard_bytes: int) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    config = {**raw_config, QUANT_KEY: spec.to_json()}
    (dst / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    shards, current, size = [], {}, 0
    for name, t in state.items():
        nbytes = t.numel() * t.element_size()
        if current and size + nbytes > max_shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name], size = t.contiguous(), size + nbytes
    shards.append(current)
    for old in list(dst.glob("model*.safetensors")) + [dst / INDEX]:
        old.unlink(missing_ok=True)
    names = ["model.safetensors"] if len(shards) == 1 else \
        [f"model-{k:05d}-of-{len(shards):05d}.safetensors" for k in range(1, len(shards) + 1)]
    for fname, shard in zip(names, shards):
        save_file(shard, str(dst / fname), metadata={"format": "pt", "quantization": spec.name})
        usual_mode(dst / fname)
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
                 "weight_map": {n: f for f, shard in zip(names, shards) for n in shard}}
        (dst / INDEX).write_text(json.dumps(index, indent=2) + "\n")


def load_quantized(path: Path, raw: dict, files: list[Path], dtype: torch.dtype | None, device) -> torch.nn.Module:
    """The model of a quantized checkpoint folder (config.json already read as `raw`)."""
    source = str(path / "config.json")
    try:
        spec = QuantSpec.from_json(raw[QUANT_KEY], source)
        cfg = GLMConfig.from_dict({k: v for k, v in raw.items() if k != QUANT_KEY}, source=source)
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    want = expected_quantized(cfg, spec, float_shapes_of(cfg))
    state: dict[str, torch.Tensor] = {}
    headers: dict = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as h:  # the header: names, dtypes, shapes; no data
                listed = {name: (tuple(h.get_slice(name).get_shape()), h.get_slice(name).get_dtype())
                          for name in h.keys()}
            for name, (found, kind_name) in listed.items():
                if name not in want:
                    raise CheckpointError(f"{f.name}: tensor {name} is not part of a {spec.name} {cfg.name} model")
                shape, kind = want[name]
                found_kind = SAFETENSORS_DTYPES.get(kind_name)
                if found != shape or found_kind is None or (kind is not None and found_kind != kind) or \
                        (kind is None and not found_kind.is_floating_point):
                    raise CheckpointError(f"{f.name}: tensor {name} is {found_kind or kind_name} {list(found)}, "
                                          f"expected {kind or 'float'} {list(shape)}")
                t = read_unmapped(f, name, headers)  # plain reads: no mapping stays resident
                if t.is_floating_point():
                    if not (t.sum().isfinite() or torch.isfinite(t).all()):
                        raise CheckpointError(f"tensor {name} in {f.name} has NaN or Inf values")
                    if kind is None and dtype is not None:
                        t = t.to(dtype)
                state[name] = t.to(device)
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{f} is not a readable safetensors file (truncated or corrupt?): {e}") from None
    missing = [n for n in want if n not in state]
    if missing:
        raise CheckpointError(f"{path}: {len(missing)} tensors missing, e.g. {missing[:3]}")
    try:
        model = quantized_glm(cfg, state, spec)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return model
