"""Reward models, the scorer of ChatGLM-RLHF: the GLM with a scalar head, trained on preference pairs.

r(conversation) = w . h, where h is the final-normed hidden state at the conversation's last
token (the ``<|user|>`` that ends the last reply, rendered as SFT renders it) and w the head's
one row. Training minimises the Bradley-Terry loss -log sigmoid(r_chosen - r_rejected) on the
chosen/rejected pairs DPO reads (train/dpo.py has the format).

Saved folder: the backbone as openglm.save_model writes it (hf layout; its LM head included, so
the folder also loads as a causal LM), the head in ``reward_head.safetensors`` (``score.weight``
[1, hidden]) and ``"openglm_reward_model": {"pooling": "last_token"}`` in config.json.
``export_reward_model`` writes transformers' GlmForSequenceClassification layout instead.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..chat import normalize_messages
from ..io import CheckpointError, load_model, save_model
from ..io.checkpoint import write_safetensors
from ..io.files import REWARD_HEAD, usual_mode
from ..io.layouts import HF, from_openglm, hf_config
from ..model.config import read_json_object
from ..model.glm import GLM
from ..tokenizer import load_tokenizer
from .dpo import encode_pair, reward_metrics
from .sft import Example, LoadReport, collate_rows, encode_conversation, read_jsonl

REWARD_KEY = "openglm_reward_model"  # in config.json: marks a reward model's folder
MARK = {"pooling": "last_token"}


class RewardModel(nn.Module):
    """A GLM backbone (``glm``) and a scalar head (``score``): one float per row."""

    def __init__(self, glm: GLM):
        super().__init__()
        self.glm, self.config = glm, glm.config  # config: the Trainer counts FLOPs from it
        p = glm.final_norm.weight
        self.score = nn.Linear(glm.config.hidden_size, 1, bias=False, device=p.device, dtype=p.dtype)
        # zero: every conversation scores 0 at the start, so no random preference is built in
        nn.init.zeros_(self.score.weight)
        if not glm.config.tie_embeddings:
            # the LM head stays (the folder still loads as a causal LM) but never sees a gradient:
            # frozen, AdamW keeps no state for it and DDP does not wait for its gradient
            glm.lm_head.requires_grad_(False)

    @property
    def layers(self) -> nn.ModuleList:
        """The backbone's blocks: FSDP makes one shard unit of each."""
        return self.glm.layers

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                doc_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Scores [B] (fp32) of rows holding one conversation each, read at each row's last real
        token: the rightmost position where attention_mask [B, T] is 1, or where doc_ids >= 0
        (training batches pad with doc -1), or the last position when neither is given. On
        right-padded rows this is the token transformers' GlmForSequenceClassification reads
        (the rightmost id that is not pad_token_id) whenever a row's last token is not the pad id;
        rendered conversations end in <|user|>."""
        T = input_ids.shape[1]
        if attention_mask is not None:
            real = attention_mask.bool()
        elif doc_ids is not None:
            real = doc_ids >= 0
        else:
            real = torch.ones_like(input_ids, dtype=torch.bool)
        positions = torch.arange(T, device=input_ids.device)
        last = (positions * real).argmax(-1)  # an all-padding filler row reads position 0
        h = self.glm.hidden_states(input_ids, attention_mask, doc_ids=doc_ids, at=positions == last[:, None])
        # [B, 1] -> [B] by a sum (exact over one element), not squeeze: FSDP2 warns when a module returns a view
        return self.score(h).float().sum(-1)

    @torch.no_grad()
    def score_examples(self, examples: Sequence[Example], pad_id: int, batch_size: int = 8) -> list[float]:
        """Scores of encoded conversations, batch_size right-padded rows per forward pass."""
        device, out = self.score.weight.device, []
        for start in range(0, len(examples), batch_size):
            batch = collate_rows([[ex] for ex in examples[start:start + batch_size]], pad_id)
            out += self(batch["input_ids"].to(device), doc_ids=batch["doc_ids"].to(device)).tolist()
        return out

    def score_conversations(self, tokenizer, conversations: Sequence[list], tools: list | None = None,
                            batch_size: int = 8) -> list[float]:
        """Scores of conversations in the official format (lists of {"role", "content"} dicts),
        rendered as SFT renders them; tools: a tool list given to every conversation."""
        examples = [encode_conversation(tokenizer, normalize_messages(c), tools) for c in conversations]
        return self.score_examples(examples, tokenizer.pad_id, batch_size)


class BradleyTerryObjective:
    """-log sigmoid(r_chosen - r_rejected) summed over pairs; normalised by the number of pairs.
    Batches are PreferencePairs.collate's: chosen rows, then rejected rows, then pair_weight."""

    def normalizer(self, batch: dict) -> torch.Tensor:
        return batch["pair_weight"].sum()

    def __call__(self, model, batch: dict) -> tuple[torch.Tensor, dict]:
        scores = model(batch["input_ids"], doc_ids=batch["doc_ids"]).double()
        w = batch["pair_weight"]
        reward_c, reward_r = scores[:len(w)], scores[len(w):]
        return (-F.logsigmoid(reward_c - reward_r) * w).sum(), reward_metrics(reward_c, reward_r, w)


# ---- the saved folder ---------------------------------------------------------------
def save_reward_model(model: RewardModel, out_dir: str | Path) -> Path:
    """Backbone (openglm.save_model, hf layout), head file and config.json mark; no tokenizer."""
    out = save_model(model.glm, out_dir)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, REWARD_KEY: MARK}, indent=2) + "\n")
    save_file({"score.weight": model.score.weight.detach().contiguous()}, str(out / REWARD_HEAD),
              metadata={"format": "pt"})
    usual_mode(out / REWARD_HEAD)
    return out


def is_reward_model(path: str | Path) -> bool:
    config = Path(path) / "config.json"
    try:
        return config.is_file() and REWARD_KEY in read_json_object(config)
    except ValueError:
        return False  # not a readable config: the loader that reads it next says why


def read_reward_model(path: str | Path, dtype: torch.dtype | None = None,
                      device: str | torch.device = "cpu") -> RewardModel:
    """The reward model saved in ``path`` (every tensor checked as load_model checks them)."""
    path = Path(path)
    if not is_reward_model(path):
        raise CheckpointError(f"{path} is not a reward model (its config.json has no {REWARD_KEY!r}); "
                              "openglm rm trains one")
    mark = read_json_object(path / "config.json")[REWARD_KEY]
    if mark != MARK:
        raise CheckpointError(f"{path / 'config.json'}: {REWARD_KEY} is {mark!r}; this openglm reads {MARK}")
    glm = load_model(path, dtype, device)
    file = path / REWARD_HEAD
    try:
        head = load_file(str(file))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{file}: missing or unreadable reward head ({e})") from None
    w = head.get("score.weight")
    if set(head) != {"score.weight"} or tuple(w.shape) != (1, glm.config.hidden_size) \
            or not w.is_floating_point() or not torch.isfinite(w).all():
        raise CheckpointError(f"{file}: expected one finite float tensor score.weight of shape "
                              f"[1, {glm.config.hidden_size}], found {sorted(head)}")
    model = RewardModel(glm)
    with torch.no_grad():
        model.score.weight.copy_(w)
    return model


def load_reward_model(path: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"):
    """(RewardModel, tokenizer) from a folder written by `openglm rm` (OUT/final)."""
    return read_reward_model(path, dtype, device), load_tokenizer(path)


def export_reward_model(src: str | Path, dst: str | Path, dtype: torch.dtype | None = None,
                        max_shard_bytes: int = 5 * 2**30) -> Path:
    """Write the reward model in ``src`` as transformers' GlmForSequenceClassification
    (Glm4ForSequenceClassification for sandwich-norm models): the backbone without its LM head,
    ``score.weight``, num_labels 1 and pad_token_id = the id the tokenizer pads with (transformers
    reads the rightmost token that is not it), plus the tokenizer."""
    model, tok = load_reward_model(src, dtype)
    cfg, dst = model.config, Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    dtype = model.score.weight.dtype  # the one asked for, else as stored
    config = hf_config(cfg, dtype)
    config.update(architectures=[config["architectures"][0].replace("ForCausalLM", "ForSequenceClassification")],
                  num_labels=1, pad_token_id=tok.pad_id, tie_word_embeddings=False)  # no LM head to tie
    (dst / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    body = [(n, t) for n, t in from_openglm(model.glm.state_dict(), cfg, HF) if n != HF.globals["lm_head.weight"]]
    write_safetensors([*body, ("score.weight", model.score.weight)], dst, dtype, max_shard_bytes)
    tok.save(dst)
    return dst


# ---- scoring files ------------------------------------------------------------------
def score_jsonl(model: RewardModel, tokenizer, path: str | Path, batch_size: int = 8) -> list[dict]:
    """One record per line of ``path``: {"line", "score"} for a {"messages", "tools"?} line,
    {"line", "chosen", "rejected"} for a pair line as DPO reads them. Every line is read and
    encoded before any is scored: a bad one is a ValueError naming FILE:LINE."""
    report, lines, examples = LoadReport(), [], []
    records = list(read_jsonl(path, report, skip_invalid=True))
    if report.errors:  # a line that is not a JSON object
        raise ValueError(report.errors[0])
    for where, record in records:
        try:
            if "chosen" in record or "rejected" in record:
                encoded = encode_pair(tokenizer, record)
            elif "messages" in record:
                encoded = (encode_conversation(tokenizer, normalize_messages(record["messages"]), record.get("tools")),)
            else:
                raise ValueError(f'expected {{"messages": [...]}} or a pair {{"messages", "chosen", "rejected"}}, '
                                 f"got keys {sorted(record)}")
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{where}: {e}") from None
        lines.append((int(where.rpartition(":")[2]), len(encoded)))
        examples += encoded
    scores = iter(model.score_examples(examples, tokenizer.pad_id, batch_size))
    return [{"line": n, "score": next(scores)} if k == 1 else
            {"line": n, "chosen": next(scores), "rejected": next(scores)} for n, k in lines]
