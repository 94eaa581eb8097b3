"""Weight-only quantization: INT8 per output channel, INT4 in groups along the input dimension.

Weights are stored as small integers with float scales; activations stay in floating point (the
kernels take them in bf16), and the matmuls read the integers directly (PyTorch's CPU kernels `_weight_int8pack_mm` and
`_weight_int4pack_mm_for_cpu`; on CUDA the INT4 "tinygemm" kernel), so decoding, which reads every
weight once per token, reads 2x (INT8) or ~3.5x (INT4) fewer bytes than bf16. Elsewhere (or where
a kernel refuses a shape) a layer multiplies by its dequantized weight.

The stored ("canonical") form, written to checkpoints and documented in docs/models.md:

- INT8: ``qweight`` int8 [N, K]; ``scales`` fp32 [N]; ``w = qweight * scales[:, None]``.
- INT4: ``qweight`` uint8 [N, K/2], two values per byte (column 2j in the high nibble, 2j+1 in
  the low one), each in 0..15; ``scales`` and ``zeros`` fp32 [N, K/G];
  ``w = (q - 8) * scale + zero`` per group of G columns (asymmetric: min and max of each group
  are exact up to rounding).

The kernels' own layouts (the CPU's INT4 packing differs by CPU) are made when a layer is built
and are all it keeps; its state dict holds them under the names above, so quantized models are
saved from the full-precision source (`io.quantize_checkpoint`), never from the packed form.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

BITS = (8, 4)
GROUP_SIZES = (32, 64, 128, 256)
SCHEMES = {"int8": 8, "int4": 4}
# Rows up to which the CPU kernels beat fp32 oneDNN (2 AVX2 cores, 123M model's layers: at 1 row
# INT8 80 and INT4 123 passes/s against 44; at 16 rows all ~16): more rows (prompts) dequantize
# the INT8 weight and run one float matmul. The kernels are fast only on bf16 activations (fp32
# ones ran INT8 at 12 passes/s), so activations are rounded to bf16 on the way in.
KERNEL_MAX_ROWS = 8


@dataclass(frozen=True)
class QuantSpec:
    """How a model is quantized: `bits` 8 or 4; `group_size` (INT4 only) columns sharing a scale;
    `head`: the output head too; `embedding`: the token embedding too (rows dequantized on lookup)."""

    bits: int = 8
    group_size: int = 64
    head: bool = True
    embedding: bool = True

    def __post_init__(self) -> None:
        if self.bits not in BITS:
            raise ValueError(f"quantization bits must be 8 or 4, got {self.bits!r}")
        if self.bits == 4 and self.group_size not in GROUP_SIZES:
            raise ValueError(f"INT4 group size must be one of {GROUP_SIZES}, got {self.group_size!r}")

    @classmethod
    def named(cls, scheme: str, group_size: int = 64) -> QuantSpec:
        """'int8' or 'int4' (as the CLI's --quantize takes them)."""
        if scheme not in SCHEMES:
            raise ValueError(f"unknown quantization {scheme!r}; choose one of {', '.join(SCHEMES)}")
        return cls(bits=SCHEMES[scheme], group_size=group_size)

    @property
    def name(self) -> str:
        return f"int{self.bits}" + (f"-g{self.group_size}" if self.bits == 4 else "")

    def to_json(self) -> dict:
        return {"method": "openglm-weight-only", **asdict(self)}

    @classmethod
    def from_json(cls, d: object, source: str) -> QuantSpec:
        if not isinstance(d, dict) or d.get("method") != "openglm-weight-only":
            raise ValueError(f"{source}: quantization must be an object with method 'openglm-weight-only'")
        try:
            return cls(bits=d["bits"], group_size=d.get("group_size", 64), head=bool(d.get("head", True)),
                       embedding=bool(d.get("embedding", True)))
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(f"{source}: bad quantization settings: {e}") from None


# -- the canonical form ------------------------------------------------------------------------

CHUNK_ELEMENTS = 1 << 20  # rows are quantized in blocks of about this many weights: bounded temporaries


def quantize_weight(w: torch.Tensor, bits: int, group_size: int = 64, name: str = "weight") -> dict[str, torch.Tensor]:
    """A [N, K] weight in canonical form (see the module docstring); rounding to nearest. Works
    through the rows in blocks written into the outputs, so a 9B model's largest matrix needs no
    fp32 copy of itself."""
    N, K = w.shape
    if bits == 4 and K % group_size:
        raise ValueError(f"{name}: {K} input columns are not a multiple of the INT4 group size {group_size}; "
                         f"pick a group size dividing {K}")
    out = {key: torch.empty(shape, dtype=dtype)
           for key, (shape, dtype) in canonical_shapes(N, K, QuantSpec(bits, group_size)).items()}
    rows = max(1, CHUNK_ELEMENTS // K)
    for i in range(0, N, rows):
        rows_copy = w[i:i + rows].detach().to(torch.float32, copy=True)
        _quantize_rows(rows_copy, bits, group_size, {k: v[i:i + rows] for k, v in out.items()})
    return out


def _quantize_rows(w: torch.Tensor, bits: int, group_size: int, out: dict[str, torch.Tensor]) -> None:
    """Quantize the fp32 rows `w` (a copy, changed in place) into the row slices `out`: in-place
    steps, so that a large model's load leaves no trail of freed temporaries behind."""
    N, K = w.shape
    if bits == 8:
        scales = out["scales"]
        torch.amax(w.abs(), 1, out=scales)
        scales.div_(127).clamp_(min=1e-12)
        out["qweight"].copy_(w.div_(scales[:, None]).round_().clamp_(-127, 127))
        return
    groups = w.view(N, K // group_size, group_size)
    low, scales, zeros = groups.amin(-1), out["scales"], out["zeros"]
    torch.sub(groups.amax(-1), low, out=scales)
    scales.div_(15).clamp_(min=1e-12)
    torch.add(low, scales, alpha=8, out=zeros)
    q = groups.sub_(low[..., None]).div_(scales[..., None]).round_().clamp_(0, 15).to(torch.uint8).view(N, K)
    torch.bitwise_or(q[:, 0::2] << 4, q[:, 1::2], out=out["qweight"])


def unpack_int4(qweight: torch.Tensor) -> torch.Tensor:
    """[N, K/2] canonical bytes -> [N, K] values 0..15 (uint8)."""
    return torch.stack((qweight >> 4, qweight & 15), dim=-1).flatten(-2)


def dequantize(parts: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The weight a canonical form stands for."""
    q, scales = parts["qweight"], parts["scales"]
    if q.dtype == torch.int8:
        return (q.float() * scales[:, None].float()).to(dtype)
    values = unpack_int4(q).float()
    N, K = values.shape
    groups = values.view(N, scales.shape[1], -1)
    return ((groups - 8) * scales[..., None].float() + parts["zeros"][..., None].float()).view(N, K).to(dtype)


def canonical_shapes(n: int, k: int, spec: QuantSpec) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """name -> (shape, dtype) of a [n, k] weight's canonical tensors."""
    if spec.bits == 8:
        return {"qweight": ((n, k), torch.int8), "scales": ((n,), torch.float32)}
    g = (n, k // spec.group_size)
    return {"qweight": ((n, k // 2), torch.uint8), "scales": (g, torch.float32), "zeros": (g, torch.float32)}


# -- modules -----------------------------------------------------------------------------------

class QuantLinear(nn.Module):
    """A linear layer over a quantized weight (bias, if any, in floating point)."""

    def __init__(self, in_features: int, out_features: int, spec: QuantSpec, parts: dict[str, torch.Tensor],
                 bias: torch.Tensor | None = None, name: str = "weight"):
        super().__init__()
        self.in_features, self.out_features, self.bits, self.group_size = in_features, out_features, spec.bits, \
            spec.group_size
        want = canonical_shapes(out_features, in_features, spec)
        for key, (shape, dtype) in want.items():
            got = parts.get(key)
            if got is None or tuple(got.shape) != shape or got.dtype != dtype:
                found = "missing" if got is None else f"{got.dtype} {list(got.shape)}"
                raise ValueError(f"{name}: quantized tensor {key} must be {dtype} {list(shape)}, found {found}")
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self._set_kernel_form(parts)

    def _set_kernel_form(self, parts: dict[str, torch.Tensor]) -> None:
        q, device = parts["qweight"], parts["qweight"].device
        self.kernel = "dequantize"
        if self.bits == 8:
            self.kernel = "int8" if device.type == "cpu" else "dequantize"
            self.register_buffer("qweight", q.contiguous())
            self.register_buffer("scales", parts["scales"].float())
            return
        # bf16, what the kernels take, kept as int16 bits so that model.float() leaves it alone
        sz = torch.stack((parts["scales"], parts["zeros"]), dim=-1).transpose(0, 1).to(torch.bfloat16).contiguous()
        try:
            if device.type == "cpu":
                packed = cpu_int4_pack(q)
                self.kernel = "int4-cpu"
            elif device.type == "cuda":
                packed = torch.ops.aten._convert_weight_to_int4pack(q.contiguous(), 8)
                self.kernel = "int4-cuda"
        except RuntimeError:  # a shape the kernel does not take: multiply by the dequantized weight
            pass
        if self.kernel == "dequantize":
            self.register_buffer("qweight", q.contiguous())
            self.register_buffer("scales", parts["scales"].float())
            self.register_buffer("zeros", parts["zeros"].float())
        else:
            self.register_buffer("qweight", packed)
            self.register_buffer("scales_zeros", sz.view(torch.int16))

    @classmethod
    def from_linear(cls, layer: nn.Linear, spec: QuantSpec, name: str = "weight") -> QuantLinear:
        parts = quantize_weight(layer.weight, spec.bits, spec.group_size, name)
        bias = None if layer.bias is None else layer.bias.detach()
        return cls(layer.in_features, layer.out_features, spec, parts, bias, name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        if self.kernel == "int8" and x2.shape[0] <= KERNEL_MAX_ROWS:
            y = torch._weight_int8pack_mm(x2.to(torch.bfloat16), self.qweight, self.scales.to(torch.bfloat16))
        elif self.kernel == "int4-cpu":
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2.to(torch.bfloat16), self.qweight, self.group_size,
                                                          self.scales_zeros.view(torch.bfloat16))
        elif self.kernel == "int4-cuda":
            y = torch.ops.aten._weight_int4pack_mm(x2.to(torch.bfloat16), self.qweight, self.group_size,
                                                   self.scales_zeros.view(torch.bfloat16))
        else:  # prompts (INT8), and shapes no kernel takes: one matmul with the dequantized weight
            parts = {"qweight": self.qweight, "scales": self.scales, "zeros": getattr(self, "zeros", None)}
            y = F.linear(x2, dequantize(parts, x.dtype))
        y = y.to(x.dtype)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.view(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        group = f", group_size={self.group_size}" if self.bits == 4 else ""
        return f"in={self.in_features}, out={self.out_features}, int{self.bits}{group}, kernel={self.kernel}"


PACK_ROWS = 1024  # rows converted to the CPU kernel's layout at a time (it blocks rows by 32 or 64)


def cpu_int4_pack(q: torch.Tensor) -> torch.Tensor:
    """The CPU INT4 kernel's layout of canonical bytes q [N, K/2], made in blocks of rows: the
    converter takes int32 values, 8 bytes a weight, which for a 9B model's output head alone
    would be 2.5 GB at once. tests/model/test_quant.py checks blocks give the layout whole."""
    blocks = [torch.ops.aten._convert_weight_to_int4pack_for_cpu(unpack_int4(q[i:i + PACK_ROWS]).int(), 1)
              for i in range(0, q.shape[0], PACK_ROWS)]
    return blocks[0] if len(blocks) == 1 else torch.cat(blocks)


class QuantEmbedding(nn.Module):
    """Token embeddings stored quantized; the rows looked up are dequantized (a few per step)."""

    def __init__(self, num: int, dim: int, spec: QuantSpec, parts: dict[str, torch.Tensor],
                 dtype: torch.dtype = torch.float32, name: str = "embed.weight"):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.bits = num, dim, spec.bits
        for key, (shape, want) in canonical_shapes(num, dim, spec).items():
            got = parts.get(key)
            if got is None or tuple(got.shape) != shape or got.dtype != want:
                raise ValueError(f"{name}: quantized tensor {key} must be {want} {list(shape)}")
            self.register_buffer(key, got.contiguous())
        # the dtype rows come out in: a buffer, so that model.float() or .to(dtype) changes it too
        self.register_buffer("out_dtype", torch.empty(0, dtype=dtype), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        rows = {key: getattr(self, key)[flat] for key in ("qweight", "scales", "zeros") if hasattr(self, key)}
        return dequantize(rows, self.out_dtype.dtype).view(*ids.shape, self.embedding_dim)


def quantize_model(model: nn.Module, spec: QuantSpec) -> nn.Module:
    """Replace the model's linear layers (and, per `spec`, head and embedding) with quantized ones,
    layer by layer so that peak memory grows by one layer's weight. Returns the model, in eval mode."""
    from .glm import GLM

    if not isinstance(model, GLM):
        raise TypeError(f"quantize_model takes a GLM, got {type(model).__name__}")
    dtype = model.final_norm.weight.dtype
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}".lstrip(".")
            if isinstance(child, nn.Linear) and (spec.head or full != "lm_head"):
                setattr(module, child_name, QuantLinear.from_linear(child, spec, full + ".weight"))
    if spec.embedding and isinstance(model.embed, nn.Embedding):
        w = model.embed.weight
        parts = quantize_weight(w, spec.bits, spec.group_size, "embed.weight")
        model.embed = QuantEmbedding(w.shape[0], w.shape[1], spec, parts, dtype)
    model.quantization = spec
    return model.eval().requires_grad_(False)


def is_quantized_name(name: str, spec: QuantSpec) -> bool:
    """Whether the openglm state-dict tensor `name` is stored quantized under `spec`."""
    if name == "lm_head.weight":
        return spec.head
    if name == "embed.weight":
        return spec.embedding
    return name.endswith(("attn.qkv.weight", "attn.proj.weight", "mlp.gate_up.weight", "mlp.down.weight"))


def quantizing_sink(state: dict, spec: QuantSpec, tie_embeddings: bool):
    """A `put(name, tensor)` for io.layouts.to_openglm that stores quantizable weights in canonical
    form as they arrive (the full-precision tensor is dropped at once) and the rest as they are."""

    def put(name: str, t: torch.Tensor) -> None:
        if name == "embed.weight" and tie_embeddings:  # the head is this same matrix
            if spec.head:
                state.update({f"lm_head.{k}": v for k, v in quantize_weight(t, spec.bits, spec.group_size,
                                                                             "lm_head.weight").items()})
            else:
                state["lm_head.weight"] = t.clone()
        if is_quantized_name(name, spec):
            module = name.removesuffix(".weight")
            state.update({f"{module}.{k}": v for k, v in quantize_weight(t, spec.bits, spec.group_size,
                                                                          name).items()})
        else:  # a copy: a view would keep the whole file it was read from mapped
            state[name] = t.clone()

    return put


def random_quantized_glm(cfg, spec: QuantSpec, dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> nn.Module:
    """A GLM of random weights (GLM.init_weights' distribution, unscaled), quantized tensor by
    tensor: a model too large to hold in full precision (the 9B preset) still fits."""
    from .glm import GLM

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in GLM(cfg).state_dict().items()}
    from .cpu import heap_trimmer

    gen, trim = torch.Generator().manual_seed(seed), heap_trimmer()
    state: dict[str, torch.Tensor] = {}
    put = quantizing_sink(state, spec, cfg.tie_embeddings)
    for name, shape in shapes.items():
        if name == "lm_head.weight" and cfg.tie_embeddings:
            continue
        w = torch.empty(shape, dtype=dtype)
        if name.endswith("norm.weight"):
            w.fill_(1.0)
        elif len(shape) == 1:
            w.zero_()
        else:
            w.normal_(0.0, cfg.init_std, generator=gen)
        put(name, w)
        del w
        trim()
    return quantized_glm(cfg, state, spec)


def quantized_glm(cfg, state: dict[str, torch.Tensor], spec: QuantSpec) -> nn.Module:
    """A GLM built from a state dict whose quantized weights are in canonical form
    (`{module}.qweight`, `.scales`, `.zeros`) and the rest in floating point. Consumes `state`;
    a missing or misshapen tensor raises ValueError naming it."""
    from .glm import GLM

    with torch.device("meta"):
        model = GLM(cfg)
    dtype = state["final_norm.weight"].dtype

    def take(module: str, n: int, k: int) -> dict[str, torch.Tensor]:
        missing = [f"{module}.{key}" for key in canonical_shapes(n, k, spec) if f"{module}.{key}" not in state]
        if missing:
            raise ValueError(f"quantized tensors missing: {', '.join(missing)}")
        return {key: state.pop(f"{module}.{key}") for key in canonical_shapes(n, k, spec)}

    from .cpu import heap_trimmer

    trim = heap_trimmer()
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}".lstrip(".")
            if isinstance(child, nn.Linear) and is_quantized_name(full + ".weight", spec):
                parts = take(full, child.out_features, child.in_features)
                setattr(module, child_name, QuantLinear(child.in_features, child.out_features, spec, parts,
                                                        state.pop(f"{full}.bias", None), full + ".weight"))
                del parts
                trim()  # the canonical form, now in the kernel's layout, leaves no hole behind
    if spec.embedding:
        n, d = cfg.vocab_size, cfg.hidden_size
        model.embed = QuantEmbedding(n, d, spec, take("embed", n, d), dtype)
    quantized = tuple(n + "." for n, m in model.named_modules() if isinstance(m, (QuantLinear, QuantEmbedding)))
    result = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in result.missing_keys if not k.startswith(quantized)]
    if missing or result.unexpected_keys:
        raise ValueError(f"tensors missing: {missing[:3]}; not in a {cfg.name} model: {result.unexpected_keys[:3]}")
    if cfg.tie_embeddings and not spec.head and not spec.embedding:
        model.lm_head.weight = model.embed.weight
    model.quantization = spec
    return model.eval().requires_grad_(False)
