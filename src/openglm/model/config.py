"""GLMConfig: the shape of a GLM-4 family model, its presets and the one size dial."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

GLM4_STOP_IDS = (151329, 151336, 151338)  # <|endoftext|>, <|user|>, <|observation|>


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
    pad_token_id: int = 151329
    eos_token_ids: list[int] = field(default_factory=lambda: list(GLM4_STOP_IDS))
    name: str = "custom"

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_kv_heads={self.num_kv_heads} must divide num_heads={self.num_heads} (GQA groups)"
            )
        if self.rotary_dim % 2:
            raise ValueError(f"rotary dims {self.rotary_dim} (head_dim x rope_fraction) must be even")

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
            pad_token_id=vocab_size - 14, eos_token_ids=[vocab_size - 14, vocab_size - 7, vocab_size - 5],
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
        try:
            raw = json.loads(file.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{file} is not valid JSON: {e}") from None
        return cls.from_dict(raw, source=str(file))

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config") -> GLMConfig:
        if "openglm" in raw:
            return cls(**raw["openglm"])
        kind = config_kind(raw)
        if kind == "chatglm":
            return _from_chatglm(raw, source)
        return _from_hf(raw, sandwich=(kind == "glm4"))


def config_kind(raw: dict) -> str:
    """'glm' (GlmForCausalLM), 'glm4' (Glm4ForCausalLM, 0414) or 'chatglm' (original)."""
    archs = raw.get("architectures") or []
    mtype = raw.get("model_type", "")
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


def _from_chatglm(raw: dict, source: str) -> GLMConfig:
    for key, want in (("rmsnorm", True), ("apply_residual_connection_post_layernorm", False),
                      ("post_layer_norm", True), ("add_bias_linear", False)):
        if raw.get(key, want) != want:
            raise ValueError(f"{source}: {key}={raw[key]!r} is not a GLM-4 style block (need {want})")
    heads = raw["num_attention_heads"]
    kv = raw.get("multi_query_group_num", heads) if raw.get("multi_query_attention", True) else heads
    eos = raw.get("eos_token_id", list(GLM4_STOP_IDS))
    return GLMConfig(
        vocab_size=raw.get("padded_vocab_size", raw.get("vocab_size")),
        hidden_size=raw["hidden_size"],
        num_layers=raw["num_layers"],
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=raw.get("kv_channels", raw["hidden_size"] // heads),
        ffn_hidden_size=raw["ffn_hidden_size"],
        max_seq_len=raw.get("seq_length", 8192),
        rope_theta=10000.0 * raw.get("rope_ratio", 1),
        norm_eps=raw.get("layernorm_epsilon", 1e-5),
        qkv_bias=raw.get("add_qkv_bias", True),
        tie_embeddings=raw.get("tie_word_embeddings", False),
        pad_token_id=raw["pad_token_id"] if raw.get("pad_token_id") is not None else 151329,
        eos_token_ids=eos if isinstance(eos, list) else [eos],
        name=raw.get("_name_or_path", "chatglm"),
    )


def _from_hf(raw: dict, sandwich: bool) -> GLMConfig:
    rope = raw.get("rope_parameters") or {}
    theta = rope.get("rope_theta", raw.get("rope_theta", 10000.0))
    fraction = rope.get("partial_rotary_factor", raw.get("partial_rotary_factor", 0.5))
    heads = raw["num_attention_heads"]
    eos = raw.get("eos_token_id", list(GLM4_STOP_IDS))
    return GLMConfig(
        vocab_size=raw["vocab_size"],
        hidden_size=raw["hidden_size"],
        num_layers=raw["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=raw.get("num_key_value_heads", heads),
        head_dim=raw.get("head_dim") or raw["hidden_size"] // heads,
        ffn_hidden_size=raw["intermediate_size"],
        max_seq_len=raw.get("max_position_embeddings", 8192),
        rope_theta=float(theta),
        rope_fraction=float(fraction),
        norm_eps=raw.get("rms_norm_eps", 1e-5),
        qkv_bias=raw.get("attention_bias", True),
        tie_embeddings=raw.get("tie_word_embeddings", False),
        sandwich_norm=sandwich,
        pad_token_id=raw["pad_token_id"] if raw.get("pad_token_id") is not None else 151329,
        eos_token_ids=eos if isinstance(eos, list) else [eos],
        name=raw.get("_name_or_path", raw.get("model_type", "glm")),
    )


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
