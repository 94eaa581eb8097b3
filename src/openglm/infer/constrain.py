"""Grammar-constrained decoding of GLM-4 replies: offered tools only, arguments that fit.

GLM-4 writes a tool call as `<|assistant|>{name}\\n{arguments}` and a text reply as
`<|assistant|>\\n{text}`. `reply_grammar` turns the offered tools into one Lark grammar of those
forms and `ToolGrammar` masks the logits with it, token by token (llguidance, the engine vLLM,
SGLang and llama.cpp use for structured output). So a model can call no tool it was not given
(what a small model does most when it errs: `python` in a greeting, docs/experiments.md), and the
arguments it writes always parse:

- text: `\\n`, then anything;
- `python`: `python\\n`, then code that is lexically Python: brackets balanced, strings and
  comments closed, no name run into a number (`211light`), non-ASCII only inside strings and
  comments (measured: most of the nano model's broken code was a stray `)` or a copied `变为`);
- `cogview`: `cogview\\n`, then any non-empty prompt;
- `simple_browser`: one `search("q"[, recency_days=N])`, `mclick([i, ...])` or `open_url("u")`;
- a user function: `name\\n`, then a JSON object that fits its `parameters` schema, spaced as
  `json.dumps` writes it (GLM-4's own spacing) and without keys the schema does not list
  (unless it sets `additionalProperties`), as OpenAI's strict function calling.

Once a call's arguments are complete, only a stop token or a further `<|assistant|>` segment
may follow. Inside text and code the model writes freely.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from functools import lru_cache

import llguidance
import numpy as np
import torch
from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask

from openglm.chat import tool_name
from openglm.chat.protocol import FREE_TEXT_TOOLS

log = logging.getLogger(__name__)

# What `json.dumps` writes (and GLM-4 was trained on); see chat.parse.format_tool_call.
JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": ", "lenient": True}
_BROWSER = r'''
browser_call: search | mclick | open_url
search: "search(" STRING (", recency_days=" INT)? ")"
mclick: "mclick([" INT (", " INT)* "])"
open_url: "open_url(" STRING ")"
STRING: /"([^"\\\n]|\\.)*"/
INT: /-?[0-9]+/
'''
# Python's lexical shape, not its syntax: enough to refuse what can never run, loose enough for any
# program with ASCII names. A chunk of names, numbers and operators never puts a name right after a
# number (so two chunks never touch), nor after a number and spaces unless it is a keyword
# (`1 if x else 2`; the nano model ran "Compute 54435 * 122." on as `print(54435 * 122. I need it`);
# brackets nest; strings and comments close (a string's prefix letters end the chunk before it).
_PY_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_PY_NUM = r"([0-9][0-9_]*(\.[0-9_]*)?([eE][+-]?[0-9_]+)?[jJ]?|0[xXoObB][0-9a-fA-F_]+)"
_PY_MARK = r"\n\\!$%&*+,\-\/:;<=>?@^|~`"  # separators but space, tab and "."
_PY_SEP = rf"[ \t.{_PY_MARK}]"
_PY_AFTER_NUM = rf"([{_PY_MARK}]|[ \t]+[.{_PY_MARK}])"  # a "." right after a number is the number's
_PY_WORD = rf"({_PY_NAME}|{_PY_NUM}([ \t]+(and|as|async|else|for|from|if|in|is|not|or))+)"  # ends as a name would
_PY_STEP = rf"({_PY_WORD}{_PY_SEP}+|{_PY_NUM}{_PY_AFTER_NUM}{_PY_SEP}*)"
_PY_END = rf"({_PY_WORD}|{_PY_NUM}[ \t]*)"
_PY_STRINGS = [q * 3 + rf"({q}{{0,2}}([^{q}\\]|\\(.|\n)))*" + q * 3 for q in "\"'"]
_PY_STRINGS += [q + rf"([^{q}\\\n]|\\(.|\n))*" + q for q in "\"'"]
_PYTHON = "\n".join([
    "python_code: PY_CHUNK (py_group PY_CHUNK?)* | (py_group PY_CHUNK?)+",
    "py_inner: PY_CHUNK? (py_group PY_CHUNK?)*",
    'py_group: PY_STRING | PY_COMMENT | "(" py_inner ")" | "[" py_inner "]" | "{" py_inner "}"',
    f"PY_CHUNK: /{_PY_SEP}+{_PY_STEP}*{_PY_END}?|{_PY_STEP}+{_PY_END}?|{_PY_END}/",
    f"PY_STRING: /{'|'.join(_PY_STRINGS)}/",
    "PY_COMMENT: /#[^\\n]*/"])
_BUILTIN_GRAMMARS = {"python": ("python_code", _PYTHON), "simple_browser": ("browser_call", _BROWSER)}


def strict_schema(parameters) -> dict:
    """A function's `parameters` as the grammar enforces them: no unlisted keys unless allowed."""
    schema = dict(parameters) if isinstance(parameters, dict) and parameters else {"type": "object"}
    if schema.get("type") == "object":
        schema.setdefault("additionalProperties", False)
    schema["x-guidance"] = {**JSON_STYLE, **schema.get("x-guidance", {})}
    return schema


def _literal(text: str) -> str:
    """A Lark string literal for `text`."""
    return json.dumps(text, ensure_ascii=False)


def reply_grammar(tools: Sequence[dict], tok=None) -> str:
    """The Lark grammar of one GLM-4 turn offering `tools` (segments joined by <|assistant|>).

    Given `tok`, each function's schema is test-compiled first: one llguidance cannot enforce
    lets the function take any JSON object, and a warning names it.
    """
    alternatives, rules = ["text"], ['text: "\\n" /(?s:.*)/']
    for k, spec in enumerate(tools):
        name = tool_name(spec)
        rule, head = f"tool{k}", f"tool{k}: {_literal(name + chr(10))}"
        if name in _BUILTIN_GRAMMARS:  # a start rule and the grammar it needs, once however many use it
            start, grammar = _BUILTIN_GRAMMARS[name]
            rules.append(f"{head} {start}")
            if grammar not in rules:
                rules.append(grammar)
        elif name in FREE_TEXT_TOOLS:  # an image prompt: any non-empty text
            rules.append(f"{head} /(?s:.+)/")
        else:
            schema = json.dumps(strict_schema(spec.get("function", {}).get("parameters")), ensure_ascii=False)
            if tok is not None and not _schema_compiles(tok, name, schema):
                schema = json.dumps(strict_schema({"type": "object", "additionalProperties": True}))
            rules.append(f"{head} %json {schema}")
        alternatives.append(rule)
    return "\n".join(["start: segment (<|assistant|> segment)*", "segment: " + " | ".join(alternatives), *rules])


@lru_cache(maxsize=4)
def _ll_tokenizer(tok) -> llguidance.LLTokenizer:
    """The tokenizer as llguidance sees it (built once per tokenizer; its stop ids end a turn)."""
    return llguidance.LLTokenizer.from_tiktoken(
        encoder=tok.mergeable_ranks, special_tokens=tok.special_ids, pattern=tok.pat_str,
        eos_token=list(tok.stop_ids), n_vocab=tok.vocab_size)


@lru_cache(maxsize=64)
def _schema_compiles(tok, name: str, schema_json: str) -> bool:
    grammar = llguidance.LLMatcher.grammar_from_lark(f"start: {_literal(name)} %json {schema_json}")
    err = llguidance.LLMatcher.validate_grammar(grammar, _ll_tokenizer(tok))
    if err:
        log.warning("tool %r: its parameters schema cannot be enforced (%s); any JSON object is allowed",
                    name, err.splitlines()[0])
    return not err


class ToolGrammar:
    """Masks the logits so a turn follows `reply_grammar(tools)`: mask(vocab, device), push(id)."""

    def __init__(self, tok, tools: Sequence[dict]):
        self.grammar = reply_grammar(tools, tok)
        self.ll = _ll_tokenizer(tok)
        self.matcher = llguidance.LLMatcher(self.ll, llguidance.LLMatcher.grammar_from_lark(self.grammar))
        if self.matcher.is_error():
            raise ValueError(f"the tools' grammar does not compile: {self.matcher.get_error()}")
        self._bits = allocate_token_bitmask(1, self.ll.vocab_size)

    def mask(self, vocab: int, device) -> torch.Tensor | None:
        """Boolean [vocab] of allowed next ids; None (decode freely) if the matcher has failed."""
        if self.matcher.is_error():
            return None
        fill_next_token_bitmask(self.matcher, self._bits)
        allowed = np.zeros(vocab, dtype=bool)  # embedding rows past the tokenizer: never allowed
        bits = np.unpackbits(self._bits.view(np.uint8), bitorder="little")[: min(vocab, self.ll.vocab_size)]
        allowed[: len(bits)] = bits  # numpy: no torch kernel launch on the per-token path
        return torch.from_numpy(allowed).to(device)

    def push(self, token_id: int) -> None:
        """Record a generated id (a stop id included)."""
        if not self.matcher.is_error() and not self.matcher.consume_token(token_id):
            log.warning("constrained decoding stopped: %s", self.matcher.get_error())
