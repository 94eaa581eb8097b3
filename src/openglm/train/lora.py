"""LoRA (Hu et al. 2021) on any linear layer by name, mergeable, saved in PEFT's format.

A wrapped layer computes ``W x + b + scaling * B (A x)`` with ``scaling = alpha / rank``;
A starts Kaiming-uniform and B at zero (PEFT's defaults), so training starts from the base.

openglm fuses q/k/v into ``attn.qkv`` where transformers' Glm has ``q_proj``, ``k_proj`` and
``v_proj``. LoRA on the fused layer therefore keeps one (A, B) pair per part, each acting on
its own rows of the output; that is exactly three PEFT adapters, so the saved file loads
with transformers + peft on the model written by ``openglm convert --layout hf`` (and by
vLLM, which packs q/k/v adapters itself). ``mlp.gate_up`` is fused in transformers too
(``gate_up_proj``), so it needs no split. The adapter keys are named after the transformers
module each part belongs to (``q_proj``, ``o_proj``, ``gate_up_proj``, ...), so the saved
tensor names are ``base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight``.
"""

from __future__ import annotations

import json
import math
import re
from contextlib import contextmanager
from fnmatch import fnmatch
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

from ..io.files import usual_mode
from ..io.layouts import HF
from ..model.glm import Linear

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def hf_parts(name: str, module: nn.Linear, cfg) -> list[tuple[str, int]]:
    """(transformers module name, output rows) of each part of openglm linear ``name``."""
    if name == "lm_head":
        return [("lm_head", module.out_features)]
    m = re.fullmatch(r"layers\.(\d+)\.(.+)", name)
    if not m:
        raise ValueError(f"LoRA: no transformers name known for module {name!r}")
    prefix, rel = HF.prefix.format(i=m.group(1)), m.group(2)
    if rel == "attn.qkv":
        return [(prefix + HF.qkv.format(p=p), rows) for p, rows in zip("qkv", (cfg.q_size, cfg.kv_size, cfg.kv_size))]
    return [(prefix + HF.names[rel + ".weight"].removesuffix(".weight"), module.out_features)]


class LoRALinear(Linear):
    """A linear layer (sharing the base layer's weight and bias) plus low-rank updates."""

    def __init__(self, base: nn.Linear, parts: list[tuple[str, int]], rank: int, alpha: float, dropout: float = 0.0):
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias  # same Parameters: names and sharing unchanged
        self.hf_names = [n for n, _ in parts]
        self.sizes = [rows for _, rows in parts]
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank
        # one key per part, in output-row order (ParameterDict sorts its keys, so keep our own)
        self.keys = keys = [n.rsplit(".", 1)[-1] for n in self.hf_names]
        dev = base.weight.device
        self.lora_A = nn.ParameterDict({k: nn.Parameter(torch.empty(rank, self.in_features, device=dev)) for k in keys})
        self.lora_B = nn.ParameterDict({k: nn.Parameter(torch.zeros(rows, rank, device=dev))
                                        for k, rows in zip(keys, self.sizes)})
        for a in self.lora_A.values():
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.adapters_enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        if not self.adapters_enabled:
            return y
        h = self.dropout(x)
        delta = [F.linear(F.linear(h, self.lora_A[k]), self.lora_B[k]) for k in self.keys]
        return y + self.scaling * (torch.cat(delta, dim=-1) if len(delta) > 1 else delta[0])

    def delta_weight(self) -> torch.Tensor:
        return self.scaling * torch.cat([self.lora_B[k] @ self.lora_A[k] for k in self.keys])


def _named_linears(model: nn.Module, patterns: list[str]):
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and not isinstance(module, LoRALinear):
            if any(fnmatch(name, p) or fnmatch(name, "*." + p) for p in patterns):
                yield name, module


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def apply_lora(model: nn.Module, targets: list[str], rank: int = 8, alpha: float = 16.0,
               dropout: float = 0.0) -> list[str]:
    """Wrap every linear whose name matches a pattern (fnmatch, also as a name suffix:
    "attn.qkv" matches "layers.3.attn.qkv"); freeze everything else. Returns the names."""
    found = list(_named_linears(model, targets))
    if not found:
        names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        raise ValueError(f"LoRA targets {targets} match no linear layer; names look like {names[:4]}")
    for p in model.parameters():
        p.requires_grad_(False)
    for name, module in found:
        _set_module(model, name, LoRALinear(module, hf_parts(name, module, model.config), rank, alpha, dropout))
    return [n for n, _ in found]


def lora_layers(model: nn.Module):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and unwrap it (in place); returns the model."""
    for name, layer in lora_layers(model):
        layer.weight += layer.delta_weight().to(layer.weight.dtype)
        plain = Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta")
        plain.weight, plain.bias = layer.weight, layer.bias
        _set_module(model, name, plain)
    return model


@contextmanager
def adapters_disabled(model: nn.Module):
    """Run the base model (e.g. as DPO's reference) without copying it."""
    layers = [m for _, m in lora_layers(model)]
    for m in layers:
        m.adapters_enabled = False
    try:
        yield model
    finally:
        for m in layers:
            m.adapters_enabled = True


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if ".lora_" in k}


def peft_tensors(lora_state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """openglm LoRA parameter names -> PEFT adapter names (transformers modules)."""
    layers = dict(lora_layers(model))
    out = {}
    for key, t in lora_state.items():
        module, kind, part = key.rsplit(".", 2)  # "layers.0.attn.qkv", "lora_A", "q_proj"
        hf = next(n for n in layers[module].hf_names if n.endswith("." + part) or n == part)
        out[f"base_model.model.{hf}.{kind}.weight"] = t.detach().contiguous()
    return out


def save_adapter(model: nn.Module, out_dir: str | Path, lora_state: dict[str, torch.Tensor] | None = None,
                 base_model: str = "", dtype: torch.dtype | None = None) -> Path:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` (PEFT LoRA format).

    ``lora_state`` defaults to the model's own LoRA tensors (pass gathered full tensors
    when the model is sharded)."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA layers to save")
    tensors = peft_tensors(lora_state if lora_state is not None else lora_state_dict(model), model)
    if dtype is not None:
        tensors = {k: v.to(dtype) for k, v in tensors.items()}
    first = layers[0][1]
    modules = sorted({n for _, m in layers for n in m.hf_names})
    # Short names ("q_proj") when every module of that kind is adapted: what vLLM expects.
    all_linear = {n for name, m in model.named_modules() if isinstance(m, nn.Linear)
                  for n, _ in hf_parts(name, m, model.config)}
    short = {n.rsplit(".", 1)[-1] for n in modules}
    if all({n for n in all_linear if n.rsplit(".", 1)[-1] == s} <= set(modules) for s in short):
        modules = sorted(short)
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
        "r": first.rank, "lora_alpha": first.alpha, "lora_dropout": getattr(first.dropout, "p", 0.0),
        "target_modules": modules, "bias": "none", "fan_in_fan_out": False, "inference_mode": True,
        "init_lora_weights": True, "use_rslora": False, "use_dora": False, "modules_to_save": None,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    save_file(tensors, str(out / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    usual_mode(out / ADAPTER_WEIGHTS)
    return out
