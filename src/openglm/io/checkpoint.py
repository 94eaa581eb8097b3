"""Load and save GLM checkpoints: safetensors, sharded, memory-mapped, in any layout.

Loading builds the model on the meta device and assigns tensors read straight from the
memory-mapped files, so RAM never holds two full copies of the weights. Every check
(missing shard, corrupt file, missing/unexpected tensor, wrong shape) runs before the model
is assembled: a failed load raises one clear error and returns no half-loaded model.
"""

from __future__ import annotations

import json
import shutil
from contextlib import ExitStack
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..model.config import GLMConfig, config_kind
from ..model.glm import GLM
from .layouts import (
    LAYOUTS,
    chatglm_config,
    check_layout,
    expected_tensors,
    from_openglm,
    hf_config,
    layout_for_kind,
    to_openglm,
)

INDEX = "model.safetensors.index.json"
SIDE_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
              "generation_config.json")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file or tensor at fault."""


def _shard_files(path: Path) -> list[Path]:
    index = path / INDEX
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(f"{index} is not a valid safetensors index: {e}") from None
        files = [path / f for f in dict.fromkeys(weight_map.values())]
        for f in files:
            if not f.exists():
                raise CheckpointError(f"checkpoint shard {f.name} is missing from {path} (listed in {INDEX})")
        return files
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"no *.safetensors files (and no {INDEX}) in {path}")
    return files


def _open_all(stack: ExitStack, files: list[Path]) -> dict[str, object]:
    """name -> open safe_open handle, checking each file's header first."""
    where = {}
    for f in files:
        try:
            handle = stack.enter_context(safe_open(str(f), framework="pt"))
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{f} is not a readable safetensors file (truncated or corrupt?): {e}") from None
        for name in handle.keys():
            if name in where:
                raise CheckpointError(f"tensor {name} appears in two files ({f.name} and another shard)")
            where[name] = handle
    return where


def load_model(path: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> GLM:
    """Load a GLM from a directory in any supported layout (hf Glm, hf Glm4, original ChatGLM).

    dtype: convert weights to this dtype (default: keep the checkpoint's).
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {path} does not exist")
    raw = _read_config(path)
    cfg = GLMConfig.from_dict(raw, source=str(path / "config.json"))
    layout = layout_for_kind(config_kind(raw)) if "openglm" not in raw else LAYOUTS[raw.get("layout", "hf")]
    want = expected_tensors(cfg, layout)
    with ExitStack() as stack:
        where = _open_all(stack, _shard_files(path))
        missing = [n for n in want if n not in where]
        if missing:
            raise CheckpointError(f"{path}: {len(missing)} tensors missing, e.g. {missing[:3]}")
        unexpected = [n for n in where if n not in want and n not in layout.dropped]
        if unexpected:
            raise CheckpointError(f"{path}: {len(unexpected)} tensors not in a {cfg.name} model, e.g. {unexpected[:3]}")
        for name, shape in want.items():
            found = tuple(where[name].get_slice(name).get_shape())
            if found != shape:
                raise CheckpointError(f"tensor {name} has shape {list(found)}, expected {list(shape)} from config.json")

        def get(name: str) -> torch.Tensor:
            try:
                t = where[name].get_tensor(name)
            except (SafetensorError, OSError, RuntimeError) as e:
                raise CheckpointError(f"cannot read tensor {name} from {path} (truncated file?): {e}") from None
            return t.to(dtype) if dtype is not None and t.dtype != dtype else t

        state = to_openglm(get, cfg, layout)
        if cfg.tie_embeddings:
            state["lm_head.weight"] = state["embed.weight"]
    with torch.device("meta"):
        model = GLM(cfg)
    model.load_state_dict(state, strict=True, assign=True)
    if cfg.tie_embeddings:
        model.lm_head.weight = model.embed.weight  # assign=True broke the sharing; restore it
    return model.to(device)


def _read_config(path: Path) -> dict:
    file = path / "config.json"
    if not file.exists():
        raise CheckpointError(f"no config.json in {path}")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{file} is not valid JSON: {e}") from None


def save_model(model: GLM, out_dir: str | Path, layout: str = "hf", dtype: torch.dtype | None = None,
               max_shard_bytes: int = 5 * 2**30) -> Path:
    """Write `model` as safetensors shards plus config.json in the `hf` or `chatglm` layout."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {sorted(LAYOUTS)}")
    cfg = model.config
    check_layout(cfg, LAYOUTS[layout])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dtype = dtype or model.embed.weight.dtype
    make_config = hf_config if layout == "hf" else chatglm_config
    (out / "config.json").write_text(json.dumps(make_config(cfg, dtype), indent=2) + "\n")
    if layout == "hf":
        gen = {"eos_token_id": list(cfg.eos_token_ids), "pad_token_id": cfg.pad_token_id}
        (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")

    shards, current, size = [], {}, 0
    for name, t in from_openglm(model.state_dict(), cfg, LAYOUTS[layout]):
        t = t.detach().to(dtype).contiguous()
        nbytes = t.numel() * t.element_size()
        if current and size + nbytes > max_shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name], size = t, size + nbytes
    shards.append(current)

    for old in list(out.glob("model*.safetensors")) + [out / INDEX]:
        old.unlink(missing_ok=True)
    if len(shards) == 1:
        save_file(shards[0], str(out / "model.safetensors"), metadata={"format": "pt"})
        return out
    weight_map, total = {}, 0
    for k, shard in enumerate(shards, 1):
        fname = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out / fname), metadata={"format": "pt"})
        for name, t in shard.items():
            weight_map[name] = fname
            total += t.numel() * t.element_size()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return out


def convert(src: str | Path, dst: str | Path, layout: str = "hf", dtype: torch.dtype | None = None,
            max_shard_bytes: int = 5 * 2**30) -> Path:
    """Re-save a checkpoint in another layout, carrying tokenizer and generation files along."""
    src, dst = Path(src), Path(dst)
    model = load_model(src, dtype=dtype)
    save_model(model, dst, layout=layout, max_shard_bytes=max_shard_bytes)
    for name in SIDE_FILES:
        if (src / name).exists() and not (name == "generation_config.json" and layout == "hf"):
            shutil.copyfile(src / name, dst / name)
    return dst
