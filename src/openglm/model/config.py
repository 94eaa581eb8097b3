"""GLMConfig: the shape of a GLM-4 family model, its presets and the one size dial."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from ..chat.protocol import pad_and_stop_ids

GLM4_IDS = pad_and_stop_ids()  # glm-4-9b-chat: pad 151329, stop on <|endoftext|>, <|user|>, <|observation|>
GLM4_STOP_IDS = tuple(GLM4_IDS["eos_token_ids"])


@dataclass
class GLMConfig:
    """Every number the model needs; field names follow the paper, not any one checkpoint."""

    vocab_size: int = 151552  # embedding rows (GLM-4 pads its 151343-id tokenizer to 151552)
    hidden_size: int = 4096
    num_layers: int = 40
    num_heads: int = 32
    num_kv_heads: int = 2  # GQA groups; must divide num_heads
    head_dim: int = 128
    ffn_hidden_size: int = 13696  # ~10/3 x hidden: GQA saves attention params, the FFN spends them
    max_seq_len: int = 131072
    rope_theta: float = 10000.0 * 500  # GLM's base 10000 times rope_ratio
    rope_fraction: float = 0.5  # only the first half of each head's dims is rotated ("2D" RoPE)
    norm_eps: float = 1.5625e-07
    qkv_bias: bool = True  # the only biases in GLM-4
    tie_embeddings: bool = False
    sandwich_norm: bool = False  # GLM-4-0414: extra RMSNorm on attention and MLP outputs
    init_std: float = 0.02
    pad_token_id: int = GLM4_IDS["pad_token_id"]
    eos_token_ids: list[int] = field(default_factory=lambda: list(GLM4_STOP_IDS))
    name: str = "custom"

    def __post_init__(self) -> None:
        check_fields({f.name: getattr(self, f.name) for f in fields(self)})

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.rope_fraction)

    @property
    def rope_ratio(self) -> float:
        return self.rope_theta / 10000.0

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    def to_dict(self) -> dict:
        return asdict(self)

    # ---- presets -------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str, **overrides) -> GLMConfig:
        """A named preset (`glm-4-9b-chat`, `nano`, ...), with optional field overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(sorted(PRESETS))}")
        return replace(PRESETS[name](), **overrides)

    @classmethod
    def from_depth(cls, depth: int, vocab_size: int = 16384, **overrides) -> GLMConfig:
        """The one size dial (as nanochat's `depth`): width, heads and FFN all follow from it.

        hidden = 64 * depth, heads of 64 dims, a quarter as many KV heads (GQA), and
        FFN = 10/3 x hidden rounded up to a multiple of 64 (GLM-4 rounds 4096 -> 13696 the
        same way, to a multiple of 128).
        """
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        hidden = 64 * depth
        heads = depth
        kv_heads = max(1, heads // 4)
        while heads % kv_heads:
            kv_heads -= 1
        ffn = 64 * math.ceil(hidden * 10 / 3 / 64)
        base = dict(
            vocab_size=vocab_size, hidden_size=hidden, num_layers=depth, num_heads=heads,
            num_kv_heads=kv_heads, head_dim=64, ffn_hidden_size=ffn, max_seq_len=2048,
            rope_theta=10000.0, norm_eps=1e-5, tie_embeddings=True,
            **pad_and_stop_ids(vocab_size),
            name=f"depth-{depth}",
        )
        base.update(overrides)
        return cls(**base)

    # ---- checkpoints ---------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path) -> GLMConfig:
        """Read `config.json` of an original ChatGLM checkpoint or a transformers Glm/Glm4 one."""
        path = Path(path)
        file = path / "config.json" if path.is_dir() else path
        if not file.exists():
            raise FileNotFoundError(f"no config.json in {path}")
        return cls.from_dict(read_json_object(file), source=str(file))

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config") -> GLMConfig:
        """A config.json's dict -> GLMConfig; every field is type- and range-checked first, and a
        bad one is a ValueError naming `source` and the checkpoint's own key."""
        try:
            if not isinstance(raw, Mapping):
                raise ValueError(f"must hold a JSON object, got {type(raw).__name__}")
            if "openglm" in raw:
                return _from_openglm(raw["openglm"])
            kind = config_kind(raw)
            if kind == "chatglm":
                return _from_chatglm(raw)
            return _from_hf(raw, sandwich=(kind == "glm4"))
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None


# ---- validation ---------------------------------------------------------------------
# A config.json is untrusted input: every field is checked for type and range before anything is
# built. The bounds sit far above any real GLM (GLM-4-32B: 61 layers, hidden 6144, 48 heads;
# glm-4-9b-chat-1m: 1M positions, RoPE base 1e8) yet low enough that a corrupt or hostile config
# fails at once instead of building a trillion-layer model or a petabyte KV cache.
INT_LIMITS = {
    "vocab_size": (1, 10_000_000),
    "hidden_size": (1, 65_536),
    "num_layers": (1, 1024),
    "num_heads": (1, 1024),
    "num_kv_heads": (1, 1024),
    "head_dim": (2, 4096),
    "ffn_hidden_size": (1, 1 << 20),
    "max_seq_len": (1, 1 << 24),
    "pad_token_id": (0, 2**31 - 1),
}
# (low, high, low included?): eps, RoPE base and fraction must be > 0, init_std may be 0.
FLOAT_LIMITS = {
    "rope_theta": (0.0, 1e12, False),
    "rope_fraction": (0.0, 1.0, False),
    "norm_eps": (0.0, 0.1, False),
    "init_std": (0.0, 1.0, True),
    "rope_ratio": (0.0, 1e8, False),  # chatglm only: rope_theta = 10000 * rope_ratio
}
FLAGS = ("qkv_bias", "tie_embeddings", "sandwich_norm", "multi_query_attention")


def _show(value) -> str:
    r = repr(value)
    return r if len(r) <= 60 else r[:57] + "..."


def _field_problem(field_name: str, value) -> str | None:
    """Why `value` cannot be this field (None if it can)."""
    if field_name in INT_LIMITS:
        lo, hi = INT_LIMITS[field_name]
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            return f"must be an integer in [{lo}, {hi}], got {_show(value)}"
    elif field_name in FLOAT_LIMITS:
        lo, hi, closed = FLOAT_LIMITS[field_name]
        ok = (not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
              and (lo <= value if closed else lo < value) and value <= hi)
        if not ok:
            return f"must be a finite number in {'[' if closed else '('}{lo:g}, {hi:g}], got {_show(value)}"
    elif field_name in FLAGS:
        if not isinstance(value, bool):
            return f"must be true or false, got {_show(value)}"
    elif field_name == "eos_token_ids":
        lo, hi = INT_LIMITS["pad_token_id"]
        if not isinstance(value, list | tuple) or not value or not all(
                not isinstance(i, bool) and isinstance(i, int) and lo <= i <= hi for i in value):
            return f"must be a token id or a non-empty list of token ids in [{lo}, {hi}], got {_show(value)}"
    elif field_name == "name" and not isinstance(value, str):
        return f"must be a string, got {_show(value)}"
    return None


def check_fields(values: Mapping, names: Mapping[str, str] | None = None) -> None:
    """Raise ValueError naming the first bad field of `values` (GLMConfig field -> value; may be
    partial). `names` maps a field to the key the user wrote, so errors name that key."""
    names = names or {}

    def name(f: str) -> str:
        return names.get(f, f)

    for f, v in values.items():
        problem = _field_problem(f, v)
        if problem:
            raise ValueError(f"{name(f)} {problem}")
    heads, kv, head_dim = values.get("num_heads"), values.get("num_kv_heads"), values.get("head_dim")
    if heads is not None and kv is not None and heads % kv:
        raise ValueError(f"{name('num_kv_heads')}={kv} must divide {name('num_heads')}={heads} (GQA groups)")
    if head_dim is not None and head_dim % 2:
        raise ValueError(f"{name('head_dim')} must be even (RoPE turns pairs of dims), got {head_dim}")
    fraction = values.get("rope_fraction")
    if head_dim is not None and fraction is not None:
        rotary = int(head_dim * fraction)
        if rotary < 2 or rotary % 2:
            raise ValueError(f"rotary dims {rotary} ({name('head_dim')} {head_dim} x {name('rope_fraction')} "
                             f"{fraction}) must be even and >= 2")


def read_json_object(file: Path, max_bytes: int = 1 << 20) -> dict:
    """The JSON object in `file`, a regular file of at most max_bytes (not a FIFO or /dev/zero:
    reading it must end), or a ValueError naming the file."""
    if not file.is_file():
        raise ValueError(f"{file} is not a regular file")
    size = file.stat().st_size
    if size > max_bytes:
        raise ValueError(f"{file} is {size:,} bytes, over the {max_bytes:,} a JSON file here may be")
    try:
        data = json.loads(file.read_bytes())
    except (ValueError, RecursionError) as e:  # RecursionError: deeply nested brackets
        raise ValueError(f"{file} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{file} must hold a JSON object, got {type(data).__name__}")
    return data


_MISSING = object()


class _Reader:
    """Takes a config.json's values into GLMConfig fields, remembering which key fed each field."""

    def __init__(self, raw: Mapping):
        self.raw, self.values, self.names = raw, {}, {}

    def take(self, field_name: str, *keys: str, default=_MISSING):
        """The first non-null key of `keys` ('a.b' reads raw['a']['b']); else `default`."""
        for key in keys:
            node, parts = self.raw, key.split(".")
            for i, part in enumerate(parts[:-1]):
                node = node.get(part)
                if node is not None and not isinstance(node, Mapping):
                    raise ValueError(f"{'.'.join(parts[:i + 1])} must be an object, got {_show(node)}")
                node = node or {}
            if node.get(parts[-1]) is not None:
                self.values[field_name], self.names[field_name] = node[parts[-1]], key
                return node[parts[-1]]
        if default is _MISSING:
            raise ValueError(f"{keys[0]} is missing")
        self.values[field_name], self.names[field_name] = default, keys[0]
        return default

    def set(self, field_name: str, value, shown: str) -> None:
        """A derived field: checked as a whole under the description `shown`."""
        self.values[field_name], self.names[field_name] = value, shown

    def checked(self) -> Mapping:
        check_fields(self.values, self.names)
        return self.values


def config_kind(raw: dict) -> str:
    """'glm' (GlmForCausalLM), 'glm4' (Glm4ForCausalLM, 0414) or 'chatglm' (original)."""
    archs = raw.get("architectures") or []
    mtype = raw.get("model_type") or ""
    if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
        raise ValueError(f"architectures must be a list of strings, got {_show(archs)}")
    if not isinstance(mtype, str):
        raise ValueError(f"model_type must be a string, got {_show(mtype)}")
    if mtype == "chatglm" or "ChatGLMForConditionalGeneration" in archs or "ChatGLMModel" in archs:
        return "chatglm"
    if mtype == "glm4" or "Glm4ForCausalLM" in archs:
        return "glm4"
    if mtype == "glm" or "GlmForCausalLM" in archs:
        return "glm"
    raise ValueError(
        f"unknown architecture (model_type={mtype!r}, architectures={archs}); openglm reads "
        "ChatGLMForConditionalGeneration, GlmForCausalLM and Glm4ForCausalLM checkpoints"
    )


def _from_openglm(raw) -> GLMConfig:
    if not isinstance(raw, Mapping):
        raise ValueError(f"openglm must be an object of GLMConfig fields, got {_show(raw)}")
    known = {f.name for f in fields(GLMConfig)}
    unknown = sorted(str(k) for k in raw if k not in known)
    if unknown:
        raise ValueError(f"openglm has unknown fields {unknown}")
    check_fields(raw, {k: f"openglm.{k}" for k in raw})
    return GLMConfig(**raw)


def _common(r: _Reader) -> None:
    """Token ids and embedding tying: the same keys in both formats."""
    r.take("pad_token_id", "pad_token_id", default=GLM4_IDS["pad_token_id"])
    eos = r.take("eos_token_ids", "eos_token_id", default=list(GLM4_STOP_IDS))
    if not isinstance(eos, list | tuple):
        r.values["eos_token_ids"] = [eos]
    r.take("tie_embeddings", "tie_word_embeddings", default=False)


def _from_chatglm(raw: dict) -> GLMConfig:
    for key, want in (("rmsnorm", True), ("apply_residual_connection_post_layernorm", False),
                      ("post_layer_norm", True), ("add_bias_linear", False)):
        if raw.get(key, want) != want:
            raise ValueError(f"{key}={raw[key]!r} is not a GLM-4 style block (need {want})")
    r = _Reader(raw)
    r.take("vocab_size", "padded_vocab_size", "vocab_size")
    r.take("hidden_size", "hidden_size")
    r.take("num_layers", "num_layers")
    r.take("num_heads", "num_attention_heads")
    r.take("ffn_hidden_size", "ffn_hidden_size")
    r.take("max_seq_len", "seq_length", default=8192)
    r.take("rope_ratio", "rope_ratio", default=1)
    r.take("norm_eps", "layernorm_epsilon", default=1e-5)
    r.take("qkv_bias", "add_qkv_bias", default=True)
    r.take("multi_query_attention", "multi_query_attention", default=True)
    r.take("name", "_name_or_path", default="chatglm")
    _common(r)
    v = r.checked()  # types first: the derived fields below do arithmetic on them
    if v["multi_query_attention"]:
        r.take("num_kv_heads", "multi_query_group_num", default=v["num_heads"])
    else:
        r.set("num_kv_heads", v["num_heads"], "num_attention_heads (multi_query_attention is false)")
    if raw.get("kv_channels") is not None:
        r.take("head_dim", "kv_channels")
    else:
        r.set("head_dim", v["hidden_size"] // v["num_heads"], "kv_channels (hidden_size // num_attention_heads)")
    r.set("rope_theta", 10000.0 * r.values.pop("rope_ratio"), "rope_ratio x 10000")
    del r.values["multi_query_attention"]
    return GLMConfig(**r.checked())


def _from_hf(raw: dict, sandwich: bool) -> GLMConfig:
    r = _Reader(raw)
    r.take("vocab_size", "vocab_size")
    r.take("hidden_size", "hidden_size")
    r.take("num_layers", "num_hidden_layers")
    heads = r.take("num_heads", "num_attention_heads")
    r.take("num_kv_heads", "num_key_value_heads", default=heads)
    r.take("ffn_hidden_size", "intermediate_size")
    r.take("max_seq_len", "max_position_embeddings", default=8192)
    r.take("rope_theta", "rope_parameters.rope_theta", "rope_theta", default=10000.0)
    r.take("rope_fraction", "rope_parameters.partial_rotary_factor", "partial_rotary_factor", default=0.5)
    r.take("norm_eps", "rms_norm_eps", default=1e-5)
    r.take("qkv_bias", "attention_bias", default=True)
    r.take("name", "_name_or_path", "model_type", default="glm")
    _common(r)
    v = r.checked()
    if raw.get("head_dim") is not None:
        r.take("head_dim", "head_dim")
    else:
        r.set("head_dim", v["hidden_size"] // v["num_heads"], "head_dim (hidden_size // num_attention_heads)")
    v = dict(r.checked())
    v["rope_theta"], v["rope_fraction"] = float(v["rope_theta"]), float(v["rope_fraction"])
    return GLMConfig(**v, sandwich_norm=sandwich)


def _glm4_9b_chat() -> GLMConfig:
    return GLMConfig(name="glm-4-9b-chat")


PRESETS = {
    "glm-4-9b-chat": _glm4_9b_chat,
    "glm-4-9b-chat-1m": lambda: replace(
        _glm4_9b_chat(), num_kv_heads=4, max_seq_len=1048576, rope_theta=10000.0 * 10000,
        name="glm-4-9b-chat-1m"),
    # GLM-4-0414: same trunk, sandwich norms, plain RoPE base, 32k context.
    "glm-4-9b-0414": lambda: replace(
        _glm4_9b_chat(), sandwich_norm=True, max_seq_len=32768, rope_theta=10000.0, norm_eps=1e-5,
        name="glm-4-9b-0414"),
    "chatglm3-6b": lambda: GLMConfig(
        vocab_size=65024, num_layers=28, max_seq_len=8192, rope_theta=10000.0, norm_eps=1e-5,
        pad_token_id=0, eos_token_ids=[2], name="chatglm3-6b"),
    # CPU-sized models from the depth dial; vocab fits the small default tokenizer.
    "nano": lambda: GLMConfig.from_depth(4, name="nano"),
    "micro": lambda: GLMConfig.from_depth(8, name="micro"),
}
