"""Text generation: one prefill, then KV-cached decoding, for one prompt or a left-padded batch.

    openglm.generate(model, tok, "Once upon a time", max_new_tokens=50)          -> str
    openglm.generate(model, tok, [{"role": "user", "content": "你好"}])            -> str (chat)
    openglm.generate(model, tok, ["a", "b", "c"])                                   -> list[str]
    for delta in openglm.generate(model, tok, messages, stream=True): print(delta, end="")
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from .compiled import compiled_decoder
from .prompt_cache import PromptCache
from .sampling import Sampling, choose, penalize_repeats

GREEDY = Sampling()


class ContextLengthError(ValueError):
    """The prompt does not fit the model's context window."""


@dataclass
class Completion:
    """One generated continuation."""

    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str = "length"  # "stop" (stop id or stop string) or "length" (max_new_tokens/context)


def _is_conversation(x) -> bool:
    return isinstance(x, (list, tuple)) and len(x) > 0 and not isinstance(x[0], (str, list, tuple))


def encode_prompt(tok, prompt, tools=None) -> list[int]:
    """A str is raw text; a list of messages (dicts or chat.Message) is rendered as a chat."""
    if isinstance(prompt, str):
        return tok.encode(prompt)
    if _is_conversation(prompt):
        return tok.encode_chat(prompt, tools=tools, add_generation_prompt=True)
    raise TypeError(f"a prompt must be a str or a list of chat messages, got {type(prompt).__name__}")


def _budget(model, n_prompt: int, max_new_tokens: int) -> int:
    ctx = model.config.max_seq_len
    if n_prompt == 0:
        raise ValueError("empty prompt: nothing to condition on")
    if n_prompt >= ctx:
        raise ContextLengthError(
            f"prompt has {n_prompt} tokens but the model's context is {ctx}; shorten it by at least "
            f"{n_prompt - ctx + 1} tokens")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    return min(max_new_tokens, ctx - n_prompt)


@torch.inference_mode()
def generate_ids(
    model,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int = 256,
    sampling: Sampling = GREEDY,
    stop_ids: Sequence[int] = (),
    pad_id: int = 0,
    constraint=None,
    prompt_cache: PromptCache | None = None,
) -> Iterator[list[int | None]]:
    """Yield, per decoding step, the new token of each prompt (None once a row has stopped).

    A stop id ends its row and is yielded (callers decide whether to show it). Prompts of
    different lengths are left-padded and masked, so each row matches its unbatched run.
    constraint: an object with mask(vocab, device) -> allowed ids or None, and push(id)
    (e.g. infer.constrain.ToolGrammar); one prompt only.
    prompt_cache: a PromptCache to start from the previous generation's cache (only the part of
    the prompt after the shared prefix is computed) and to leave this one's in; one prompt only.
    """
    B = len(prompts)
    if constraint is not None and B != 1:
        raise ValueError(f"a decoding constraint takes one prompt, got {B}")
    if prompt_cache is not None and B != 1:
        raise ValueError(f"a prompt cache serves one prompt, got {B}")
    lengths = [len(p) for p in prompts]
    budget = min(_budget(model, n, max_new_tokens) for n in lengths)
    T = max(lengths)
    device = model.final_norm.weight.device
    ids = torch.full((B, T), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((B, T + budget), dtype=torch.long, device=device)
    for b, p in enumerate(prompts):
        ids[b, T - len(p):] = torch.tensor(list(p), dtype=torch.long)
        mask[b, T - len(p):] = 1
    padded = min(lengths) != T
    generator = torch.Generator().manual_seed(sampling.seed) if sampling.seed is not None else None
    seen = None
    if sampling.repetition_penalty != 1.0:
        seen = torch.zeros(B, model.config.vocab_size, dtype=torch.bool, device=device)
        seen.scatter_(1, ids, mask[:, :T].bool())
    stops = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    decoder = compiled_decoder(model)  # model.compiled_decoder, set by compile_decoding
    start = 0
    first, index = _distinct(prompts)
    if prompt_cache is not None:
        cache, start = prompt_cache.take(model, prompts[0], T + budget)
    else:
        cache = decoder.new_cache(B, T + budget) if decoder else model.new_cache(B, T + budget)
    if len(first) < B and prompt_cache is None:
        # Several samples of one prompt (RL groups, n > 1): prefill each distinct prompt once and
        # copy its keys and values to every row that shares it.
        shared = model.new_cache(len(first), T)
        logits = model(ids[first], attention_mask=mask[first, :T] if padded else None, cache=shared,
                       logits_to_keep=1)[index, -1]
        for layer in range(len(cache.k)):
            cache.k[layer][:, :, :T] = shared.k[layer][index]
            cache.v[layer][:, :, :T] = shared.v[layer][index]
        cache.length = T
    else:
        logits = model(ids[:, start:], attention_mask=mask[:, :T] if padded else None, cache=cache,
                       logits_to_keep=1)[:, -1]
    if prompt_cache is not None:
        prompt_cache.ids.extend(prompts[0][start:])  # kept equal to the tokens in the cache
    for step in range(budget):
        if seen is not None:
            logits = penalize_repeats(logits, seen, sampling.repetition_penalty)
        if constraint is not None:
            allowed = constraint.mask(logits.shape[-1], logits.device)
            if allowed is not None:
                logits = logits.masked_fill(~allowed, float("-inf"))
        nxt = choose(logits, sampling, generator)
        tokens = nxt.tolist()
        if constraint is not None:
            constraint.push(tokens[0])
        yield [None if d else t for t, d in zip(tokens, done.tolist())]
        done |= torch.isin(nxt, stops)
        if bool(done.all()) or step == budget - 1:
            return
        if seen is not None:
            seen[torch.arange(B), nxt] = True
        n = T + step + 1
        if decoder:
            logits = decoder.step(nxt[:, None], mask[:, :n], cache)
        else:
            logits = model(nxt[:, None], attention_mask=mask[:, :n] if padded else None, cache=cache)[:, -1]
        if prompt_cache is not None:
            prompt_cache.ids.append(tokens[0])


def _distinct(prompts: Sequence[Sequence[int]]) -> tuple[list[int], list[int]]:
    """(row of each distinct prompt's first occurrence, for every row the position of its prompt
    in that list)."""
    seen: dict[tuple[int, ...], int] = {}
    first, index = [], []
    for b, p in enumerate(prompts):
        key = tuple(p)
        if key not in seen:
            seen[key] = len(first)
            first.append(b)
        index.append(seen[key])
    return first, index


class StopStrings:
    """Holds back text that might be the start of a stop string; cuts at the first full match."""

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.hit = False

    def feed(self, text: str) -> str:
        if not self.stops:
            return text
        self.pending += text
        cut = min((i for i in (self.pending.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            out, self.pending, self.hit = self.pending[:cut], "", True
            return out
        hold = max((k for s in self.stops for k in range(1, len(s)) if self.pending.endswith(s[:k])), default=0)
        out = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(out):]
        return out

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


def _stream_one(model, tok, prompt_ids, max_new_tokens, sampling, stop_ids, stop, out: Completion,
                prompt_cache=None):
    decoder = tok.stream_decoder(skip_special=True)
    stopper = StopStrings(stop)
    for (token,) in generate_ids(model, [prompt_ids], max_new_tokens, sampling, stop_ids, tok.pad_id,
                                 prompt_cache=prompt_cache):
        out.token_ids.append(token)
        if token in stop_ids:
            out.finish_reason = "stop"
            break
        delta = stopper.feed(decoder.push(token))
        if delta:
            out.text += delta
            yield delta
        if stopper.hit:
            out.finish_reason = "stop"
            return
    tail = stopper.feed(decoder.flush())
    if stopper.hit:
        out.finish_reason = "stop"
    else:
        tail += stopper.flush()
    if tail:
        out.text += tail
        yield tail


def complete(model, tok, prompt, max_new_tokens: int = 256, *, sampling: Sampling = GREEDY,
             stop: Sequence[str] = (), stop_ids: Sequence[int] | None = None, tools=None,
             prompt_cache: PromptCache | None = None) -> list[Completion]:
    """Generate for one prompt or a batch; returns a Completion (ids, text, finish reason) per prompt.
    prompt_cache (one prompt only): see generate_ids."""
    batch = isinstance(prompt, (list, tuple)) and not _is_conversation(prompt)
    prompts = list(prompt) if batch else [prompt]
    if not prompts:
        raise ValueError("no prompts given")
    encoded = [encode_prompt(tok, p, tools) for p in prompts]
    stop_ids = list(tok.stop_ids if stop_ids is None else stop_ids)
    if len(encoded) == 1:
        out = Completion()
        for _ in _stream_one(model, tok, encoded[0], max_new_tokens, sampling, stop_ids, stop, out, prompt_cache):
            pass
        return [out]
    outs = [Completion() for _ in encoded]
    for step in generate_ids(model, encoded, max_new_tokens, sampling, stop_ids, tok.pad_id,
                             prompt_cache=prompt_cache):
        for out, token in zip(outs, step):
            if token is None:
                continue
            out.token_ids.append(token)
            if token in stop_ids:
                out.finish_reason = "stop"
    for out in outs:
        ids = out.token_ids[:-1] if out.finish_reason == "stop" else out.token_ids
        stopper = StopStrings(stop)
        out.text = stopper.feed(tok.decode(ids, skip_special=True))
        if stopper.hit:
            out.finish_reason = "stop"
        else:
            out.text += stopper.flush()
    return outs


def generate(model, tok, prompt, max_new_tokens: int = 256, *, temperature: float = 0.0, top_k: int = 0,
             top_p: float = 1.0, repetition_penalty: float = 1.0, seed: int | None = None,
             stop: Sequence[str] = (), stop_ids: Sequence[int] | None = None, stream: bool = False, tools=None,
             prompt_cache: PromptCache | None = None):
    """Generate text. Returns str, list[str] for a batch of prompts, or with stream=True an
    iterator of text deltas (single prompt only). Stops on the tokenizer's stop ids (GLM-4:
    <|endoftext|>, <|user|>, <|observation|>) and on any of the `stop` strings. A prompt_cache
    (single prompt) lets the next turn of a conversation compute only its new tokens."""
    sampling = Sampling(temperature, top_k, top_p, repetition_penalty, seed)
    if stream:
        if isinstance(prompt, (list, tuple)) and not _is_conversation(prompt):
            raise ValueError("stream=True takes a single prompt, not a batch")
        ids = encode_prompt(tok, prompt, tools)
        stops = list(tok.stop_ids if stop_ids is None else stop_ids)
        return _stream_one(model, tok, ids, max_new_tokens, sampling, stops, stop, Completion(), prompt_cache)
    outs = complete(model, tok, prompt, max_new_tokens, sampling=sampling, stop=stop, stop_ids=stop_ids, tools=tools,
                    prompt_cache=prompt_cache)
    batch = isinstance(prompt, (list, tuple)) and not _is_conversation(prompt)
    return [o.text for o in outs] if batch else outs[0].text
