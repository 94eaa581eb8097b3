"""Run configuration: one dataclass per stage, read from YAML plus ``key=value`` overrides.

The YAML holds the fields below at top level (``lora:`` and ``blank:`` are nested maps). Every
value is checked against its field's type with pydantic (lax: the YAML string "3e-4" is a
number); an error names the field and what it expects, an unknown key names the closest valid one.

Paths written in a config file (train_data, eval_data, out_dir, and tokenizer or model when they
are not "default" or a preset name) are relative to that file's folder, so a config runs from any
working directory; paths given as overrides (``--set``) are relative to the working directory.
``openglm:PATH`` names a file inside the installed package (``openglm:assets/train_examples/corpus.txt``),
so a config can point at the shipped examples wherever openglm is installed.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

PACKAGE_PREFIX = "openglm:"
PACKAGE_DIR = Path(__file__).resolve().parents[1]


class _Typed:
    """Checks (and coerces) every plain field against its annotation after __init__."""

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            if f.name not in NESTED:
                setattr(self, f.name, _typed(f.name, hints[f.name], getattr(self, f.name)))


@dataclass
class LoRAConfig(_Typed):
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    # fnmatch patterns over openglm module names; "attn.qkv" matches every layer's
    targets: list[str] = field(default_factory=lambda: ["attn.qkv", "attn.proj", "mlp.gate_up", "mlp.down"])


@dataclass
class BlankConfig(_Typed):
    mask_ratio: float = 0.15
    span_lambda: float = 3.0
    gmask_fraction: float = 0.5


@dataclass
class TrainConfig(_Typed):
    # model: a preset name ("nano", "micro", ...) or a checkpoint directory to start from
    model: str = "nano"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    tokenizer: str = "default"  # "default" (16384 ids) or a tokenizer path
    # data
    train_data: list[str] = field(default_factory=list)
    eval_data: list[str] = field(default_factory=list)  # empty: hold out eval_fraction of train_data
    eval_fraction: float = 0.05
    seq_len: int = 256
    micro_batch_size: int = 4  # rows per forward pass on each process
    grad_accum: int = 1  # global batch = micro_batch_size * grad_accum * processes
    # optimisation
    max_steps: int = 100
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 10
    schedule: str = "cosine"  # cosine | wsd (warmup-stable-decay) | constant
    decay_fraction: float = 0.2  # wsd: share of steps spent decaying
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0  # 0 = no clipping (the norm is still logged)
    # numerics and speed
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; weights and optimizer stay fp32) | auto
    gradient_checkpointing: bool = False
    compile: bool = False
    device: str = "auto"  # auto | cpu | cuda
    distributed: str = "auto"  # auto (ddp when launched by torchrun) | none | ddp | fsdp
    peak_flops: float | None = None  # per device, for MFU; None = measure a bf16 matmul at start
    # objective (pretrain): causal | blank (GLM blank infilling)
    objective: str = "causal"
    blank: BlankConfig = field(default_factory=BlankConfig)
    lora: LoRAConfig | None = None
    # run
    out_dir: str = "runs/train"
    seed: int = 1234
    log_every: int = 1
    eval_every: int = 50  # 0 = never
    eval_batches: int = 4
    save_every: int = 50  # 0 = only at the end
    keep_last: int = 3
    resume: bool = False  # continue from the newest checkpoint in out_dir
    tensorboard: bool = True
    progress: bool = True

    STAGE = "pretrain"

    def __post_init__(self) -> None:
        super().__post_init__()
        checks = {"precision": ("fp32", "bf16", "fp16", "auto"), "schedule": ("cosine", "wsd", "constant"),
                  "distributed": ("auto", "none", "ddp", "fsdp"), "objective": ("causal", "blank"),
                  "device": ("auto", "cpu", "cuda")}
        for name, allowed in checks.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}; choose one of {', '.join(allowed)}")
        for name in ("seq_len", "micro_batch_size", "grad_accum", "max_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_yaml(cls, path: str | Path | None = None, overrides: dict[str, Any] | None = None):
        """The config in ``path`` (its relative paths taken from its folder), then ``overrides``."""
        raw: dict[str, Any] = {}
        if path is not None:
            raw = _read_yaml(Path(path))
            raw.pop("stage", None)
            base = Path(os.path.abspath(path)).parent
            raw = _resolve_paths(_check(cls, raw, f"{path}: "), base)
        extra = _resolve_paths(_check(cls, overrides or {}, ""), None)
        return _build(cls, _merge(raw, extra))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = ""):
        """A config from a mapping; relative paths stay relative to the working directory."""
        raw = dict(raw)
        raw.pop("stage", None)
        return _build(cls, _resolve_paths(_check(cls, raw, f"{source}: " if source else ""), None))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return {"stage": self.STAGE, **out}


@dataclass
class SFTConfig(TrainConfig):
    packing: bool = True  # several conversations per row, attention kept within each
    loss_weighting: str = "token"  # token: mean over tokens; sequence: mean of per-conversation means
    sorted_batching: bool = False  # LongAlign: batches of similar length, in shuffled order
    skip_invalid: bool = False  # count and skip malformed lines instead of stopping
    lr: float = 2e-5
    warmup_steps: int = 5
    weight_decay: float = 0.0
    STAGE = "sft"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss_weighting not in ("token", "sequence"):
            raise ValueError(f"loss_weighting={self.loss_weighting!r}; choose token or sequence")


@dataclass
class DPOConfig(SFTConfig):
    beta: float = 0.1
    reference: str = "precompute"  # precompute (one pass at start) | model (frozen copy every step)
    packing: bool = False
    lr: float = 5e-6
    STAGE = "dpo"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reference not in ("precompute", "model"):
            raise ValueError(f"reference={self.reference!r}; choose precompute or model")


@dataclass
class RMConfig(SFTConfig):
    """A reward model: a scalar head on the model, trained on chosen/rejected pairs (Bradley-Terry)."""

    packing: bool = False
    lr: float = 1e-5
    STAGE = "rm"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lora is not None:
            raise ValueError("lora: a reward model trains every weight and its head; set lora: null")


NESTED = {"lora": LoRAConfig, "blank": BlankConfig}
# fields that hold paths; tokenizer and model only when they are not a name ("default", a preset)
PATH_FIELDS = ("train_data", "eval_data", "sft_data", "out_dir", "tokenizer", "model")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ValueError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of config keys at top level")
    return raw


def _check(cls, raw: dict[str, Any], prefix: str, parent: str = "") -> dict[str, Any]:
    """``raw`` (possibly partial) with every value checked against its field's type."""
    names = [f.name for f in dataclasses.fields(cls)]
    hints = _hints(cls)
    out = {}
    for key, value in raw.items():
        name = f"{parent}{key}"
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {parent + close[0]!r}?)" if close else ""
            raise ValueError(f"{prefix}unknown key {name!r}{hint}; valid keys for {cls.__name__}: "
                             f"{', '.join(sorted(names))}")
        if key in NESTED and isinstance(value, dict):
            out[key] = _check(NESTED[key], value, prefix, f"{name}.")
        elif key == "lora" and value in (None, True, False):
            out[key] = value
        elif key in NESTED:
            what = "a mapping, true or null" if key == "lora" else "a mapping"
            raise ValueError(f"{prefix}{name}: expected {what}, got {value!r}")
        else:
            out[key] = _typed(name, hints[key], value, prefix)
    return out


def _build(cls, raw: dict[str, Any]):
    kwargs = dict(raw)
    lora = kwargs.get("lora")
    if isinstance(lora, dict) or lora is True:
        kwargs["lora"] = LoRAConfig(**(lora if isinstance(lora, dict) else {}))
    elif lora is False:
        kwargs["lora"] = None
    if isinstance(kwargs.get("blank"), dict):
        kwargs["blank"] = BlankConfig(**kwargs["blank"])
    return cls(**kwargs)


@functools.cache
def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@functools.cache
def _adapter(tp) -> TypeAdapter:
    return TypeAdapter(tp)


def _typed(name: str, tp, value, prefix: str = ""):
    """``value`` as type ``tp`` or a ValueError naming the field and the type it expects."""
    if isinstance(value, str) and typing.get_origin(tp) is list:
        value = [value]  # "train_data: a.txt" means one file
    try:
        if isinstance(value, bool) and tp is not bool:
            raise ValueError  # pydantic would read true as 1
        return _adapter(tp).validate_python(value)
    except (ValidationError, ValueError):
        raise ValueError(f"{prefix}{name}: expected {_describe(tp)}, got {value!r}") from None


_WORDS = {int: ("an integer", "integers"), float: ("a number", "numbers"), str: ("a string", "strings"),
          bool: ("true or false", "booleans")}


def _describe(tp) -> str:
    """A type annotation in words: ``float | None`` -> "a number or null"."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp in _WORDS:
        return _WORDS[tp][0]
    if origin in (types.UnionType, typing.Union):
        kinds = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(kinds) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"a list of {_WORDS.get(args[0], ('', 'values'))[1]}"
    if origin is tuple:
        return f"a list of {len(args)} {_WORDS.get(args[0], ('', 'values'))[1]}"
    if origin is dict:
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _resolve(value: str, base: Path | None) -> str:
    """``openglm:PATH`` -> inside the package; a relative path -> under ``base`` (when given)."""
    if value.startswith(PACKAGE_PREFIX):
        return str(PACKAGE_DIR / value[len(PACKAGE_PREFIX):])
    if base is None:
        return value
    path = Path(value).expanduser()
    return str(path) if path.is_absolute() else os.path.normpath(base / path)


def _resolve_paths(raw: dict[str, Any], base: Path | None) -> dict[str, Any]:
    out = dict(raw)
    for key in PATH_FIELDS:
        value = out.get(key)
        if isinstance(value, list):
            out[key] = [_resolve(v, base) for v in value]
        elif isinstance(value, str) and _is_path(key, value, base):
            out[key] = _resolve(value, base)
    return out


def _is_path(key: str, value: str, base: Path | None) -> bool:
    """tokenizer "default" and model preset names ("nano") are names, not paths."""
    if key == "tokenizer":
        return value != "default"
    if key == "model":  # a bare name is a preset unless the config's folder holds a checkpoint of that name
        return value.startswith(PACKAGE_PREFIX) or any(s in value for s in ("/", os.sep, "~")) \
            or value in (".", "..") or (base is not None and (base / value).is_dir())
    return True


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        both_maps = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if both_maps else value
    return out


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["lr=1e-3", "lora.rank=4"]`` -> ``{"lr": 0.001, "lora": {"rank": 4}}`` (values read as YAML)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"override {pair!r} is not key=value")
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return out
