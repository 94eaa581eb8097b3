"""Load and save GLM checkpoints: safetensors, sharded, memory-mapped, in any layout.

Loading builds the model on the meta device and assigns tensors read straight from the
memory-mapped files, so RAM never holds two full copies of the weights. A checkpoint is
untrusted input: config.json fields (type and range), shard paths (inside the folder), tensor
names, dtypes and shapes are all checked before anything is built, and every weight is checked
for NaN/Inf as it is read; a failed load raises one CheckpointError naming the file, field or
tensor, and returns no half-loaded model.
"""

from __future__ import annotations

import json
import shutil
from contextlib import ExitStack
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..model.config import GLMConfig, config_kind, read_json_object
from ..model.cpu import heap_trimmer
from ..model.glm import GLM
from ..model.quant import QuantSpec, quantized_glm, quantizing_sink
from .files import INDEX, REWARD_HEAD, SAFETENSORS_DTYPES, SIDE_FILES, CheckpointError, read_unmapped, usual_mode
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
from .quantized import QUANT_KEY, load_quantized, write_quantized

MAX_CONFIG_BYTES, MAX_INDEX_BYTES = 1 << 20, 64 << 20  # real ones: ~2 KB and ~100 KB
DTYPES = {k: v for k, v in SAFETENSORS_DTYPES.items() if v.is_floating_point}  # what GLM computes in


def _roots(path: Path) -> list[Path]:
    """Folders a checkpoint's files may resolve into: its own, and for a Hugging Face cache
    snapshot (hub/models--X/snapshots/REV, whose files are symlinks) the repo's blobs folder."""
    root = path.resolve()
    return [root, root.parent.parent / "blobs"] if root.parent.name == "snapshots" else [root]


def _inside(path: Path, rel: str, listed_in: str) -> Path:
    """path/rel, refused unless rel is a plain relative name resolving (symlinks followed) to a
    regular file inside the checkpoint: an index must not make us read /etc/passwd or /dev/zero."""
    if not isinstance(rel, str) or not rel or "\0" in rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise CheckpointError(f"{listed_in}: shard path {rel!r} must be a file name inside {path}")
    f = path / rel
    if not f.exists():
        raise CheckpointError(f"checkpoint shard {rel} is missing from {path} (listed in {listed_in})")
    real = f.resolve()
    if not any(real.is_relative_to(root) for root in _roots(path)):
        raise CheckpointError(f"{listed_in}: {rel} resolves to {real}, outside the checkpoint folder {path}")
    if not real.is_file():
        raise CheckpointError(f"{listed_in}: {rel} is not a regular file")
    return f


def _shard_files(path: Path) -> list[Path]:
    index = path / INDEX
    if index.exists():
        try:
            weight_map = _read_json(path, INDEX, MAX_INDEX_BYTES).get("weight_map")
        except CheckpointError as e:
            raise CheckpointError(f"{index} is not a valid safetensors index: {e}") from None
        if not isinstance(weight_map, dict) or not weight_map or not all(
                isinstance(f, str) for f in weight_map.values()):
            raise CheckpointError(f"{index} is not a valid safetensors index: weight_map must be a non-empty "
                                  "object of tensor name -> shard file name")
        return [_inside(path, f, INDEX) for f in dict.fromkeys(weight_map.values())]
    files = [_inside(path, f.name, str(path)) for f in sorted(path.glob("*.safetensors")) if f.name != REWARD_HEAD]
    if not files:
        raise CheckpointError(f"no *.safetensors files (and no {INDEX}) in {path}")
    return files


def _open_all(stack: ExitStack, files: list[Path]) -> dict[str, tuple[object, Path]]:
    """name -> (open safe_open handle, its file), checking each file's header first."""
    where = {}
    for f in files:
        try:
            handle = stack.enter_context(safe_open(str(f), framework="pt"))
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{f} is not a readable safetensors file (truncated or corrupt?): {e}") from None
        for name in handle.keys():
            if name in where:
                raise CheckpointError(f"tensor {name} appears in two files ({f.name} and another shard)")
            where[name] = handle, f
    return where


def load_model(path: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
               quantize: str | QuantSpec | None = None) -> GLM:
    """Load a GLM from a directory in any supported layout (hf Glm, hf Glm4, original ChatGLM), or
    a quantized checkpoint (io.quantize_checkpoint's).

    dtype: convert weights to this dtype (default: keep the checkpoint's).
    quantize: "int8", "int4" or a QuantSpec: quantize each weight as it is read, so that memory
    holds the quantized model plus one full-precision tensor, never the full model.
    Raises CheckpointError (a ValueError) naming the file, field or tensor for any bad input.
    """
    if dtype is not None and dtype not in DTYPES.values():
        raise ValueError(f"dtype must be one of {list(DTYPES.values())}, got {dtype}")
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {path} does not exist")
    raw = _read_json(path, "config.json", MAX_CONFIG_BYTES)
    if QUANT_KEY in raw:
        if quantize is not None:
            raise CheckpointError(f"{path} holds a quantized model already; load it without quantize=")
        return load_quantized(path, raw, _shard_files(path), dtype, device)
    if quantize is not None:
        spec = QuantSpec.named(quantize) if isinstance(quantize, str) else quantize
        state: dict[str, torch.Tensor] = {}
        cfg, _ = read_checkpoint(path, dtype, put_for=lambda c: quantizing_sink(state, spec, c.tie_embeddings))
        try:
            return quantized_glm(cfg, {k: v.to(device) for k, v in state.items()}, spec)
        except ValueError as e:
            raise CheckpointError(f"{path}: {e}") from None
    cfg, state = read_checkpoint(path, dtype)
    with torch.device("meta"):
        model = GLM(cfg)
    model.load_state_dict(state, strict=True, assign=True)
    if cfg.tie_embeddings:
        model.lm_head.weight = model.embed.weight  # assign=True broke the sharing; restore it
    return model.to(device)


def read_checkpoint(path: Path, dtype: torch.dtype | None = None, put_for=None) -> tuple[GLMConfig, dict | None]:
    """(config, openglm state dict of tensors mapped from the files) of a full-precision checkpoint,
    every name, dtype and shape checked first. With put_for, each tensor is instead read (not
    mapped) into memory of its own and handed to ``put_for(cfg)(name, tensor)`` (the state returned
    is None), so a consumer that shrinks each tensor never holds the checkpoint: a mapping's pages
    stay resident, and counted, for as long as any tensor of the file is alive."""
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {path} does not exist")
    raw = _read_json(path, "config.json", MAX_CONFIG_BYTES)
    if QUANT_KEY in raw:
        raise CheckpointError(f"{path} holds a quantized model; this needs the full-precision checkpoint it was "
                              "made from")
    try:
        cfg = GLMConfig.from_dict(raw, source=str(path / "config.json"))
        if "openglm" in raw:
            name = raw.get("layout", "hf")
            if not isinstance(name, str) or name not in LAYOUTS:
                raise ValueError(f"{path / 'config.json'}: layout must be one of {sorted(LAYOUTS)}, got {name!r}")
            layout = LAYOUTS[name]
        else:
            layout = layout_for_kind(config_kind(raw))
        want = expected_tensors(cfg, layout)
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    with ExitStack() as stack:
        where = _open_all(stack, _shard_files(path))
        missing = [n for n in want if n not in where]
        if missing:
            raise CheckpointError(f"{path}: {len(missing)} tensors missing, e.g. {missing[:3]}")
        unexpected = [n for n in where if n not in want and n not in layout.dropped]
        if unexpected:
            raise CheckpointError(f"{path}: {len(unexpected)} tensors not in a {cfg.name} model, e.g. {unexpected[:3]}")
        _check_headers(where, want, mixed_ok=dtype is not None)
        headers: dict = {}  # file -> (data start, its safetensors header), for put_for's reads

        def get(name: str) -> torch.Tensor:
            handle, file = where[name]
            try:
                t = handle.get_tensor(name) if put_for is None else read_unmapped(file, name, headers)
            except (SafetensorError, OSError, RuntimeError) as e:
                raise CheckpointError(f"cannot read tensor {name} from {file} (truncated file?): {e}") from None
            stored, t = t.dtype, (t.to(dtype) if dtype is not None and t.dtype != dtype else t)
            # A sum is one vectorised pass (~10x cheaper than isfinite().all()) and any NaN/Inf
            # makes it non-finite; only if it overflows (huge but finite weights) does the exact test run.
            if not (t.sum().isfinite() or torch.isfinite(t).all()):
                why = f" after conversion from {stored} to {dtype}" if stored != t.dtype else ""
                raise CheckpointError(f"tensor {name} in {file.name} has NaN or Inf values{why}")
            return t

        if put_for is not None:
            sink, trim = put_for(cfg), heap_trimmer()

            def put(name: str, t: torch.Tensor) -> None:
                sink(name, t)
                trim()  # hand the freed full-precision tensor's pages back before reading the next

            try:
                to_openglm(get, cfg, layout, put=put)
            except ValueError as e:
                if isinstance(e, CheckpointError):
                    raise
                raise CheckpointError(f"{path}: {e}") from None
            return cfg, None
        state = to_openglm(get, cfg, layout)
        if cfg.tie_embeddings:
            state["lm_head.weight"] = state["embed.weight"]
    return cfg, state


def _check_headers(where: dict, want: dict[str, tuple[int, ...]], mixed_ok: bool) -> None:
    """Dtype and shape of every wanted tensor, from the file headers alone (no data read)."""
    first = None
    for name, shape in want.items():
        handle, file = where[name]
        info = handle.get_slice(name)
        kind = info.get_dtype()
        if kind not in DTYPES:
            raise CheckpointError(f"tensor {name} in {file.name} has dtype {kind}; GLM weights must be "
                                  f"{', '.join(DTYPES)}")
        first = first or (name, kind)
        if kind != first[1] and not mixed_ok:  # GLM computes in one dtype; mixed ones fail mid-forward
            raise CheckpointError(f"tensor {name} in {file.name} is {kind} but {first[0]} is {first[1]}; "
                                  "pass dtype= to convert them to one dtype")
        found = tuple(info.get_shape())
        if found != shape:
            raise CheckpointError(f"tensor {name} has shape {list(found)}, expected {list(shape)} from config.json "
                                  f"(in {file.name})")


def _read_json(path: Path, name: str, max_bytes: int) -> dict:
    """A JSON object file of the checkpoint (inside the folder: a symlink out is refused)."""
    if not (path / name).exists():
        raise CheckpointError(f"no {name} in {path}")
    try:
        return read_json_object(_inside(path, name, str(path)), max_bytes)
    except ValueError as e:
        raise CheckpointError(str(e)) from None


def save_model(model: GLM, out_dir: str | Path, layout: str = "hf", dtype: torch.dtype | None = None,
               max_shard_bytes: int = 5 * 2**30) -> Path:
    """Write `model` as safetensors shards plus config.json in the `hf` or `chatglm` layout."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {sorted(LAYOUTS)}")
    if getattr(model, "quantization", None) is not None:
        raise ValueError("this model was quantized in memory and keeps only its kernels' packed form; write a "
                         "quantized checkpoint from the full-precision one: openglm quantize SRC DST "
                         "(openglm.quantize_checkpoint)")
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
    return write_safetensors(from_openglm(model.state_dict(), cfg, LAYOUTS[layout]), out, dtype, max_shard_bytes)


def write_safetensors(tensors, out: Path, dtype: torch.dtype, max_shard_bytes: int) -> Path:
    """(name, tensor) pairs -> out/model.safetensors, or shards of at most max_shard_bytes plus
    their index; earlier model*.safetensors files in `out` are removed."""
    shards, current, size = [], {}, 0
    for name, t in tensors:
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
        usual_mode(out / "model.safetensors")
        return out
    weight_map, total = {}, 0
    for k, shard in enumerate(shards, 1):
        fname = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out / fname), metadata={"format": "pt"})
        usual_mode(out / fname)
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


def quantize_checkpoint(src: str | Path, dst: str | Path, spec: QuantSpec | str, dtype: torch.dtype | None = None,
                        max_shard_bytes: int = 5 * 2**30) -> Path:
    """Write a quantized copy of the checkpoint `src` (any layout) to `dst`, with its tokenizer.
    Peak memory: the quantized model plus one full-precision tensor. dtype: of the parts that
    stay in floating point (norms, biases; default: as stored)."""
    spec = QuantSpec.named(spec) if isinstance(spec, str) else spec
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise ValueError(f"{dst}: write the quantized checkpoint to another folder than its source")
    state: dict[str, torch.Tensor] = {}
    cfg, _ = read_checkpoint(src, dtype, put_for=lambda c: quantizing_sink(state, spec, c.tie_embeddings))

    float_dtype = state["final_norm.weight"].dtype
    write_quantized(state, hf_config(cfg, float_dtype), spec, dst, max_shard_bytes)
    for name in SIDE_FILES:
        if (src / name).exists() and name != "generation_config.json":
            shutil.copyfile(src / name, dst / name)
    if cfg.eos_token_ids:
        gen = {"eos_token_id": list(cfg.eos_token_ids), "pad_token_id": cfg.pad_token_id}
        (dst / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    return dst
