"""GGUF export: an openglm checkpoint as one file that llama.cpp and Ollama run.

Written with the `gguf` package (llama.cpp's own Python writer and quantizers), under the names
llama.cpp gives GLM-4: architecture ``chatglm`` for glm-4-9b-chat and its -hf form, ``glm4`` for
GLM-4-0414 (the one with post-attention and post-MLP norms). Tensors keep llama.cpp's layout for
these architectures: fused QKV with its bias (chatglm) or split Q/K/V (glm4), the fused gate/up
projection as ``ffn_up`` (gate first, as in openglm), RoPE on interleaved pairs of the first
``rotary_dim`` channels (llama.cpp's "normal" rope), so no weight is permuted.

The tokenizer goes in as a GPT-2 style byte-level BPE: every rank's bytes as a token string,
merges recovered from the ranks, GLM-4's special tokens as control tokens, and the chat template.
llama.cpp splits text with GLM-4's pattern (pre-tokenizer ``glm4``); a tokenizer trained with
another pattern still runs, but llama.cpp tokenizes some text differently (reported).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .._deps import require

TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte (what byte-level BPE vocabularies store)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _split_in_two(ranks: dict[bytes, int], token: bytes) -> tuple[bytes, bytes] | None:
    """The two pieces BPE merged last to make `token`: merge its bytes lowest rank first, using
    only merges ranked below the token itself."""
    parts = [bytes([b]) for b in token]
    limit = ranks[token]
    while len(parts) > 2:
        best = min(range(len(parts) - 1), key=lambda i: ranks.get(parts[i] + parts[i + 1], limit))
        if ranks.get(parts[best] + parts[best + 1], limit) >= limit:
            return None
        parts[best:best + 2] = [parts[best] + parts[best + 1]]
    return (parts[0], parts[1]) if len(parts) == 2 else None


def vocabulary(tok) -> tuple[list[str], list[int], list[str], int]:
    """(token strings, token types, merges, tokens without a merge) in llama.cpp's gpt2 form."""
    import gguf

    uni = bytes_to_unicode()
    show = lambda b: "".join(uni[x] for x in b)  # noqa: E731
    tokens = [f"[PAD{i}]" for i in range(tok.vocab_size)]
    types = [gguf.TokenType.UNUSED] * tok.vocab_size
    merges, unmerged = [], 0
    for token, rank in sorted(tok.mergeable_ranks.items(), key=lambda kv: kv[1]):
        tokens[rank], types[rank] = show(token), gguf.TokenType.NORMAL
        if len(token) > 1:
            pair = _split_in_two(tok.mergeable_ranks, token)
            if pair is None:
                unmerged += 1
            else:
                merges.append(f"{show(pair[0])} {show(pair[1])}")
    for name, i in tok.special_ids.items():
        tokens[i], types[i] = name, gguf.TokenType.CONTROL
    return tokens, [int(t) for t in types], merges, unmerged


def _tensor_names(cfg, arch: str):
    """(our state-dict name, GGUF name, row slice or None) for every tensor llama.cpp loads."""
    yield "embed.weight", "token_embd.weight", None
    yield "final_norm.weight", "output_norm.weight", None
    yield "lm_head.weight", "output.weight", None
    q, kv = cfg.q_size, cfg.kv_size
    for i in range(cfg.num_layers):
        ours, blk = f"layers.{i}", f"blk.{i}"
        yield f"{ours}.attn_norm.weight", f"{blk}.attn_norm.weight", None
        for s in (["weight", "bias"] if cfg.qkv_bias else ["weight"]):
            if arch == "glm4":  # as llama.cpp's converter writes GLM-4-0414
                for part, rows in (("q", (0, q)), ("k", (q, q + kv)), ("v", (q + kv, q + 2 * kv))):
                    yield f"{ours}.attn.qkv.{s}", f"{blk}.attn_{part}.{s}", rows
            else:
                yield f"{ours}.attn.qkv.{s}", f"{blk}.attn_qkv.{s}", None
        yield f"{ours}.attn.proj.weight", f"{blk}.attn_output.weight", None
        yield f"{ours}.mlp_norm.weight", f"{blk}.ffn_norm.weight", None
        yield f"{ours}.mlp.gate_up.weight", f"{blk}.ffn_up.weight", None
        yield f"{ours}.mlp.down.weight", f"{blk}.ffn_down.weight", None
        if cfg.sandwich_norm:
            yield f"{ours}.post_attn_norm.weight", f"{blk}.post_attention_norm.weight", None
            yield f"{ours}.post_mlp_norm.weight", f"{blk}.post_ffw_norm.weight", None


def _encode(gguf, t: torch.Tensor, kind: str) -> tuple[np.ndarray, object]:
    """(array, raw GGML type) of one tensor: norms, biases and vectors in F32 (as llama.cpp's
    converter keeps them); matrices in `kind`, or F16 where a row is not a whole number of blocks."""
    a = t.detach().float().contiguous().numpy()
    Q = gguf.GGMLQuantizationType
    if a.ndim == 1 or kind == "f32":
        return a, Q.F32
    if kind in ("q8_0", "q4_0"):
        qtype = Q.Q8_0 if kind == "q8_0" else Q.Q4_0
        if a.shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0] == 0:
            return gguf.quants.quantize(a, qtype), qtype
        kind = "f16"
    if kind == "bf16":
        return gguf.quants.quantize(a, Q.BF16), Q.BF16
    return a.astype(np.float16), Q.F16


def export_gguf(src: str | Path, out: str | Path, kind: str = "f16") -> dict:
    """Write the checkpoint `src` (any layout, with its tokenizer) as a GGUF file; returns a report
    (architecture, tensors, bytes, tokens without a merge, whether llama.cpp splits text as we do)."""
    gguf = require("gguf", "gguf")
    from ..tokenizer import load_tokenizer
    from ..tokenizer.core import GLM4_PAT_STR
    from .checkpoint import read_checkpoint

    if kind not in TYPES:
        raise ValueError(f"unknown GGUF type {kind!r}; choose one of {', '.join(TYPES)}")
    src, out = Path(src), Path(out)
    cfg, state = read_checkpoint(src)
    tok = load_tokenizer(src)
    arch = "glm4" if cfg.sandwich_norm else "chatglm"
    if arch == "chatglm" and cfg.q_size != cfg.hidden_size:
        arch = "glm4"  # llama.cpp's chatglm assumes heads x head_dim == hidden; glm4 reads both
        if not cfg.sandwich_norm:
            raise ValueError(f"{src}: llama.cpp's chatglm architecture needs heads x head_dim == hidden size "
                             f"({cfg.q_size} != {cfg.hidden_size})")
    w = gguf.GGUFWriter(str(out), arch)
    w.add_name(src.resolve().name)
    w.add_context_length(cfg.max_seq_len)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.ffn_hidden_size)
    w.add_block_count(cfg.num_layers)
    w.add_head_count(cfg.num_heads)
    w.add_head_count_kv(cfg.num_kv_heads)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_layer_norm_rms_eps(cfg.norm_eps)
    w.add_rope_dimension_count(cfg.rotary_dim)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_file_type({"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 7, "bf16": 32}[kind])

    tokens, types, merges, unmerged = vocabulary(tok)
    if tok.vocab_size < cfg.vocab_size:  # embedding rows past the tokenizer (padding to a round size)
        tokens += [f"[PAD{i}]" for i in range(tok.vocab_size, cfg.vocab_size)]
        types += [int(gguf.TokenType.UNUSED)] * (cfg.vocab_size - tok.vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("glm4")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    ids = tok.special_ids
    w.add_eos_token_id(ids["<|endoftext|>"])
    w.add_unk_token_id(ids["<|endoftext|>"])
    w.add_eot_token_id(ids["<|user|>"])
    w.add_eom_token_id(ids["<|observation|>"])
    w.add_pad_token_id(tok.pad_id)
    w.add_add_bos_token(False)
    w.add_chat_template(_chat_template(src))

    count = 0
    for ours, name, rows in _tensor_names(cfg, arch):
        t = state[ours] if rows is None else state[ours][rows[0]:rows[1]]
        array, raw = _encode(gguf, t, kind)
        w.add_tensor(name, array, raw_dtype=raw)
        count += 1
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=False)
    w.close()
    return {"path": str(out), "architecture": arch, "type": kind, "tensors": count, "bytes": out.stat().st_size,
            "tokens": len(tokens), "merges": len(merges), "tokens_without_merge": unmerged,
            "same_pre_tokenizer": tok.pat_str == GLM4_PAT_STR}


def _chat_template(src: Path) -> str:
    """The checkpoint's own chat template, else GLM-4's (shipped with openglm)."""
    config = src / "tokenizer_config.json"
    if config.exists():
        template = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
        if isinstance(template, str) and template:
            return template
    return (Path(__file__).resolve().parents[1] / "assets" / "glm-4-9b-chat.chat_template.jinja").read_text()
