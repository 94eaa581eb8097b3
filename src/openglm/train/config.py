"""Run configuration: one dataclass per stage, read from YAML plus ``key=value`` overrides.

The YAML holds the fields below at top level (``lora:`` and ``blank:`` are nested maps).
Unknown keys are errors that name the key and list the valid ones.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class LoRAConfig:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    # fnmatch patterns over openglm module names; "attn.qkv" matches every layer's
    targets: list[str] = field(default_factory=lambda: ["attn.qkv", "attn.proj", "mlp.gate_up", "mlp.down"])


@dataclass
class BlankConfig:
    mask_ratio: float = 0.15
    span_lambda: float = 3.0
    gmask_fraction: float = 0.5


@dataclass
class TrainConfig:
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
        checks = {"precision": ("fp32", "bf16", "fp16", "auto"), "schedule": ("cosine", "wsd", "constant"),
                  "distributed": ("auto", "none", "ddp", "fsdp"), "objective": ("causal", "blank"),
                  "device": ("auto", "cpu", "cuda")}
        for name, allowed in checks.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}; choose one of {', '.join(allowed)}")
        for name in ("seq_len", "micro_batch_size", "grad_accum", "max_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if isinstance(self.train_data, str):
            self.train_data = [self.train_data]
        if isinstance(self.eval_data, str):
            self.eval_data = [self.eval_data]
        self.betas = tuple(self.betas)

    @classmethod
    def from_yaml(cls, path: str | Path | None = None, overrides: dict[str, Any] | None = None):
        raw: dict[str, Any] = {}
        if path is not None:
            raw = yaml.safe_load(Path(path).read_text()) or {}
            if not isinstance(raw, dict):
                raise ValueError(f"{path}: expected a mapping of config keys at top level")
        return cls.from_dict(_merge(raw, overrides or {}), source=str(path or "config"))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config"):
        raw = dict(raw)
        raw.pop("stage", None)
        return _build(cls, raw, source)

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


def _build(cls, raw: dict[str, Any], source: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in raw if k not in fields]
    if unknown:
        raise ValueError(f"{source}: unknown key {unknown[0]!r} for {cls.__name__}; "
                         f"valid keys: {', '.join(sorted(fields))}")
    nested = {"lora": LoRAConfig, "blank": BlankConfig}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in raw.items():
        if key in nested and isinstance(value, dict):
            value = _build(nested[key], value, f"{source}: {key}")
        elif key == "lora" and value is True:
            value = LoRAConfig()
        elif hints[key] in (float, float | None) and isinstance(value, (str, int)) and not isinstance(value, bool):
            try:  # YAML reads 3e-4 (no dot) as a string
                value = float(value)
            except ValueError:
                raise ValueError(f"{source}: {key}={value!r} is not a number") from None
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ValueError(f"{source}: {e}") from None


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
