"""Reuse of the KV cache between generations that share a prompt prefix (one conversation at a time).

A chat or agent turn's prompt is the previous turn's prompt, its reply and the next message, and
every conversation starts with the same system prompt and tool schemas. Without reuse each turn
prefills all of it again, which for a large model on a CPU is most of a turn's time. A
PromptCache keeps the cache of the last generation and the token ids it holds; the next prompt
prefills only what follows their longest common prefix (as llama.cpp's server and vLLM's prefix
caching do).

    pc = PromptCache()
    for step in generate_ids(model, [ids], 64, prompt_cache=pc): ...
    pc.reused, pc.prefilled   # prompt tokens taken from the cache / computed
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

from ..model.glm import KVCache
from .compiled import capacity_for


class PromptCache:
    """The KV cache of one model's last generation (batch 1) and the token ids in its slots.
    It trusts the model's weights not to change between generations: clear() after training."""

    def __init__(self):
        self.cache: KVCache | None = None
        self.ids: list[int] = []  # the tokens whose keys and values fill cache slots 0..len-1
        self.reused = 0  # prompt tokens served from the cache, over all generations
        self.prefilled = 0  # prompt tokens that had to be computed
        self._model = None  # a weak reference: another model's keys and values are no use

    def take(self, model, prompt: Sequence[int], n_tokens: int) -> tuple[KVCache, int]:
        """A batch-1 cache with room for n_tokens, holding the longest usable prefix of `prompt`,
        and that prefix's length. At least the prompt's last token is always left to compute (its
        logits start the reply). Capacities are the compiled step's power-of-two buckets, so a
        growing conversation rarely needs a new cache; a new one gets the shared prefix copied."""
        w = model.final_norm.weight
        held = self.cache.k[0] if self.cache is not None else w
        if self._model is None or self._model() is not model or (held.dtype, held.device) != (w.dtype, w.device):
            self.clear()
            self._model = weakref.ref(model)
        keep = 0
        for a, b in zip(self.ids, prompt[:-1]):
            if a != b:
                break
            keep += 1
        old, capacity = self.cache, capacity_for(n_tokens)
        if old is None or old.max_len < capacity:
            self.cache = model.new_cache(1, capacity)
            for src, dst in zip(old.k + old.v if old is not None and keep else [], self.cache.k + self.cache.v):
                dst[:, :, :keep] = src[:, :, :keep]
        self.cache.length = keep
        self.ids = list(prompt[:keep])
        self.reused += keep
        self.prefilled += len(prompt) - keep
        return self.cache, keep

    def clear(self) -> None:
        """Forget the cached tokens and free the cache's memory."""
        self.cache, self.ids = None, []
