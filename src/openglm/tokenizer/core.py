"""Byte-level BPE tokenizer with GLM-4 special tokens, backed by tiktoken's core.

The BPE itself (regex pre-split + rank-ordered byte-pair merges) runs in
tiktoken's Rust code via a locally constructed ``tiktoken.Encoding``; nothing
is ever downloaded. This module adds the GLM-4 conventions on top: special
tokens appended after the BPE ranks, "special text typed by a user is plain
text", stop/pad ids, chat encoding and incremental (streaming) decoding.
"""

from __future__ import annotations

import codecs
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path

import tiktoken

# Rank files and the pad token live in .ranks so that .hf (which core calls to save) needs nothing of core.
from .ranks import PAD_TOKEN, parse_rank_file, read_rank_file, write_rank_file  # noqa: F401 (re-exported)

# GLM-4's pre-tokenizer split pattern (from the glm-4-9b-chat release). It is
# cl100k's pattern with the contractions written as one case-insensitive group.
GLM4_PAT_STR = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# A split pattern for small models that must copy names and numbers: one Han character per
# piece, digits in groups of up to three (as GLM-4), and letters never glued to the space or
# quote before them. With GLM-4's pattern " Hanoi" (in a question) and "Hanoi" (after a JSON
# quote) are different tokens, and a tiny model cannot learn that they are the same name; here
# a name is the same tokens wherever it stands, so copying it needs no learned alias. Costs ~2x
# tokens on Chinese text. Pair it with `reserve_pieces(ranks, digit_groups(), ...)` so every
# group of three digits is one token: single-digit tokens repeat inside a number ("63844"),
# and copying them by "find the previous token, emit the next" loops ("8444").
COPY_FRIENDLY_PAT_STR = (
    r"\p{Han}|\p{N}{1,3}|[^\s\p{Han}\p{N}\p{P}\p{S}]+|[\p{P}\p{S}]+|\s*[\r\n]+|\s+(?!\S)|\s+"
)

def glm4_special_tokens() -> list[str]:
    """The 14 GLM-4 special token strings in id order (owned by openglm.chat)."""
    # Imported lazily: openglm.chat is the single source of truth for the
    # protocol tokens, and importing it at module load would couple the two
    # packages' import order.
    from openglm.chat import SPECIAL_TOKENS

    return list(SPECIAL_TOKENS)


def glm4_stop_tokens() -> list[str]:
    """Tokens that end generation (GLM-4 stops on all three, not just eos)."""
    from openglm.chat import STOP_TOKENS

    return list(STOP_TOKENS)


class Tokenizer:
    """GLM-4 style byte-level BPE tokenizer.

    ``special_tokens`` is either an ordered list of names (ids are
    ``n_ranks + index``, GLM-4's convention) or an explicit ``{name: id}`` map
    (used when a tokenizer.json assigns its own ids). ``None`` means GLM-4's 14.
    """

    def __init__(
        self,
        mergeable_ranks: Mapping[bytes, int],
        pat_str: str = GLM4_PAT_STR,
        special_tokens: Sequence[str] | Mapping[str, int] | None = None,
        name: str = "openglm",
    ):
        ranks = dict(mergeable_ranks)
        # Every single byte must be a token, otherwise tiktoken cannot encode
        # arbitrary text and would fail deep in Rust on unseen bytes.
        missing = [b for b in range(256) if bytes([b]) not in ranks]
        if missing:
            raise ValueError(f"rank table lacks {len(missing)} single-byte tokens, e.g. {missing[:4]}")
        if len(set(ranks.values())) != len(ranks):
            raise ValueError("rank table has duplicate ranks")
        self.n_ranks = max(ranks.values()) + 1
        if special_tokens is None:
            special_tokens = glm4_special_tokens()
        if isinstance(special_tokens, Mapping):
            specials = {str(k): int(v) for k, v in special_tokens.items()}
        else:
            specials = {tok: self.n_ranks + i for i, tok in enumerate(special_tokens)}
        clash = set(specials.values()) & set(ranks.values())
        if clash or len(set(specials.values())) != len(specials):
            raise ValueError(f"special token ids collide with BPE ranks or each other: {sorted(clash)[:4]}")

        self.name = name
        self.pat_str = pat_str
        self.mergeable_ranks = ranks
        self._specials = dict(sorted(specials.items(), key=lambda kv: kv[1]))
        self._special_by_id = {i: t for t, i in self._specials.items()}
        self._enc = tiktoken.Encoding(
            name, pat_str=pat_str, mergeable_ranks=ranks, special_tokens=self._specials
        )

    # -- constructors -------------------------------------------------------

    @classmethod
    def from_tiktoken_file(
        cls,
        path: str | Path,
        pat_str: str = GLM4_PAT_STR,
        special_tokens: Sequence[str] | Mapping[str, int] | None = None,
        max_ranks: int | None = None,
        name: str | None = None,
    ) -> Tokenizer:
        """Build from a rank file; ``max_ranks`` keeps only ranks ``< max_ranks``.

        Truncation yields a valid smaller BPE because a merge only ever builds a
        token out of lower-ranked ones (for files produced by BPE training).
        """
        ranks = read_rank_file(path)
        if max_ranks is not None:
            ranks = {t: r for t, r in ranks.items() if r < max_ranks}
        return cls(ranks, pat_str=pat_str, special_tokens=special_tokens, name=name or Path(path).stem)

    # -- vocabulary ---------------------------------------------------------

    @property
    def special_ids(self) -> dict[str, int]:
        """``{special token string: id}`` in id order."""
        return dict(self._specials)

    @property
    def special_tokens(self) -> list[str]:
        return list(self._specials)

    @property
    def vocab_size(self) -> int:
        """Number of ids (BPE ranks + specials); the model may pad its embedding further."""
        return max(self.n_ranks - 1, *self._specials.values(), -1) + 1

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def pad_id(self) -> int:
        return self._specials[PAD_TOKEN]

    @property
    def eos_id(self) -> int:
        return self._specials[PAD_TOKEN]

    @property
    def stop_ids(self) -> list[int]:
        """Ids that end a generated turn: ``<|endoftext|>``, ``<|user|>``, ``<|observation|>``."""
        return [self._specials[t] for t in glm4_stop_tokens() if t in self._specials]

    def token_id(self, name: str) -> int:
        """Id of a special token, or of a string that is exactly one BPE token."""
        if name in self._specials:
            return self._specials[name]
        rank = self.mergeable_ranks.get(name.encode("utf-8"))
        if rank is None:
            raise KeyError(f"{name!r} is neither a special token nor a single BPE token")
        return rank

    def is_special(self, token_id: int) -> bool:
        return token_id in self._special_by_id

    def token_bytes(self, token_id: int) -> bytes:
        """Raw bytes of one id (a special token's bytes are its UTF-8 name)."""
        special = self._special_by_id.get(token_id)
        if special is not None:
            return special.encode("utf-8")
        return self._enc.decode_single_token_bytes(token_id)

    # -- encoding -----------------------------------------------------------

    def encode(self, text: str, allow_special: bool | Collection[str] = False) -> list[int]:
        """Encode text; special-token text is plain text unless allowed.

        Never raises on user text: by default ``"<|user|>"`` typed by a user is
        encoded as ordinary BPE tokens (a control id here would let users forge
        turns). ``allow_special=True`` (or a set of names) maps that text to ids.
        """
        if allow_special is False:
            return self._enc.encode_ordinary(text)
        allowed = "all" if allow_special is True else set(allow_special)
        return self._enc.encode(text, allowed_special=allowed, disallowed_special=())

    def encode_batch(
        self, texts: Sequence[str], allow_special: bool | Collection[str] = False, num_threads: int = 8
    ) -> list[list[int]]:
        if allow_special is False:
            return self._enc.encode_ordinary_batch(list(texts), num_threads=num_threads)
        allowed = "all" if allow_special is True else set(allow_special)
        return self._enc.encode_batch(
            list(texts), num_threads=num_threads, allowed_special=allowed, disallowed_special=()
        )

    def encode_segments(self, segments: Iterable, join_text: bool = False, return_roles: bool = False):
        """Encode rendered chat segments (objects with ``.text``, ``.special``, ``.role``).

        Special segments become their control id by lookup, never by parsing
        text. Each text segment is encoded on its own with specials disallowed,
        as the original GLM-4 tokenizer did (metadata line and content apart).
        ``join_text=True`` instead joins adjacent text of the same role first,
        which equals tokenizing the rendered string (transformers'
        ``apply_chat_template``); the two differ only when a content starts
        with a newline run. ``return_roles`` also returns one role per id.
        """
        ids: list[int] = []
        roles: list = []
        pending: list[str] = []
        pending_role = None

        def flush_text() -> None:
            if pending:
                part = self.encode("".join(pending))
                ids.extend(part)
                roles.extend([pending_role] * len(part))
                pending.clear()

        for seg in segments:
            role = getattr(seg, "role", None)
            if seg.special:
                flush_text()
                if seg.text not in self._specials:
                    raise KeyError(f"segment marked special but {seg.text!r} is not a special token")
                ids.append(self._specials[seg.text])
                roles.append(role)
            else:
                if pending and (role != pending_role or not join_text):
                    flush_text()
                pending.append(seg.text)
                pending_role = role
        flush_text()
        return (ids, roles) if return_roles else ids

    def encode_chat(self, messages, tools=None, add_generation_prompt: bool = True) -> list[int]:
        """Token ids of a GLM-4 conversation (``[gMASK]<sop><|user|>...``), per ``openglm.chat``."""
        from openglm.chat import render_segments

        segs = render_segments(messages, tools=tools, add_generation_prompt=add_generation_prompt)
        return self.encode_segments(segs)

    # -- decoding -----------------------------------------------------------

    def decode_bytes(self, ids: Iterable[int], skip_special: bool = False) -> bytes:
        return b"".join(
            self.token_bytes(i) for i in ids if not (skip_special and i in self._special_by_id)
        )

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        """Decode ids to text; invalid UTF-8 (e.g. a cut-off character) becomes U+FFFD."""
        return self.decode_bytes(ids, skip_special).decode("utf-8", errors="replace")

    def stream_decoder(self, skip_special: bool = False) -> StreamDecoder:
        return StreamDecoder(self, skip_special=skip_special)

    # -- persistence --------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write tokenizer.model, tokenizer.json and tokenizer_config.json."""
        from .hf import save_pretrained

        return save_pretrained(self, directory)

    def __repr__(self) -> str:
        return (
            f"Tokenizer(name={self.name!r}, n_ranks={self.n_ranks}, "
            f"specials={len(self._specials)}, vocab_size={self.vocab_size})"
        )


class StreamDecoder:
    """Turns ids into text one at a time, holding back incomplete UTF-8.

    A multi-byte character is often split across two or more BPE tokens; the
    incremental UTF-8 decoder keeps the partial bytes until the character is
    complete, so ``push`` never returns half a character. The concatenation of
    all ``push`` results plus ``flush()`` equals ``Tokenizer.decode`` of the ids.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = False):
        self.tokenizer = tokenizer
        self.skip_special = skip_special
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        if self.skip_special and self.tokenizer.is_special(token_id):
            return ""
        return self._dec.decode(self.tokenizer.token_bytes(token_id))

    def flush(self) -> str:
        """Return what is left (bytes that never formed a character become U+FFFD)."""
        out = self._dec.decode(b"", final=True)
        self._dec.reset()
        return out
