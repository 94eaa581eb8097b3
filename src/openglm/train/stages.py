"""The stages as functions: build model, data and objective from a config, then train.

    from openglm.train import TrainConfig, run_pretrain
    run_pretrain(TrainConfig.from_yaml("configs/nano_pretrain.yaml"))

Each writes OUT_DIR/{log.jsonl, loss.png, tb/, checkpoints/} and, at the end, OUT_DIR/final
(the model, LoRA merged, with its tokenizer: ready for `openglm convert`, `load_model`,
`generate`) and, for LoRA runs, OUT_DIR/adapter (PEFT format). A reward model's final adds
its head (train/reward_model.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from ..io import load_model, save_model
from ..model import GLM, GLMConfig
from ..tokenizer import default_tokenizer, load_tokenizer
from . import distributed as D
from .checkpoint import STATE_FILE, latest_checkpoint
from .config import DPOConfig, RMConfig, SFTConfig, TrainConfig
from .data import StepBatches, TokenStream, split_windows, tokenize_text_files, window_plan
from .dpo import DPOObjective, PreferencePairs
from .lora import adapters_disabled, apply_lora, merge_lora
from .objectives import BlankInfilling, LMObjective, causal_collate
from .reward_model import BradleyTerryObjective, RewardModel
from .sft import collate_rows, load_conversations, row_plan
from .trainer import Trainer

TEXT_SUFFIXES = (".txt", ".md", ".jsonl")


def get_tokenizer(cfg: TrainConfig):
    return default_tokenizer() if cfg.tokenizer == "default" else load_tokenizer(cfg.tokenizer)


def build_model(cfg: TrainConfig, device: torch.device, lora: bool = True) -> GLM:
    """The starting model: a preset (seeded init, identical on every process and every resume)
    or a checkpoint directory; then LoRA adapters when configured."""
    torch.manual_seed(cfg.seed)
    if Path(cfg.model).is_dir():
        if cfg.model_overrides:
            raise ValueError("model_overrides apply to presets; a checkpoint's shape is fixed by its config.json")
        model = load_model(cfg.model, dtype=torch.float32)
    else:
        model = GLM(GLMConfig.from_preset(cfg.model, **cfg.model_overrides))
    model.to(device)
    if lora and cfg.lora is not None:
        apply_lora(model, cfg.lora.targets, cfg.lora.rank, cfg.lora.alpha, cfg.lora.dropout)
    model.gradient_checkpointing = cfg.gradient_checkpointing
    return model.train()


def _check_vocab(tok, model: GLM) -> None:
    if tok.vocab_size > model.config.vocab_size:
        raise ValueError(f"tokenizer has {tok.vocab_size} ids but the model embeds only {model.config.vocab_size}")


def _token_paths(paths: list[str], tok, cache: Path, info: D.DistInfo) -> list[str]:
    """Shard paths as given; plain-text files are tokenized once (rank 0) into ``cache``."""
    if not paths:
        raise ValueError("train_data is empty: give token shards (a directory or .bin files) or text files")
    text = [p for p in paths if Path(p).suffix in TEXT_SUFFIXES]
    if not text:
        return paths
    if len(text) != len(paths):
        raise ValueError("train_data mixes text files and token shards; tokenize the text with the data pipeline")
    if info.is_main:
        tokenize_text_files(text, tok, cache)
    D.barrier()
    return [str(cache)]


def _heldout(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded random held-out subset of n records (at least one when fraction > 0)."""
    order = np.random.default_rng([seed, 12345]).permutation(n).tolist()
    k = min(n - 1, max(1, round(n * fraction))) if fraction > 0 and n > 1 else 0
    return sorted(order[k:]), sorted(order[:k])


def _loader(cfg: TrainConfig, plan, collate, info: D.DistInfo) -> StepBatches:
    return StepBatches(plan, collate, cfg.micro_batch_size, cfg.grad_accum, info.rank, info.world)


def finish_stage(trainer: Trainer, tok, cfg: TrainConfig) -> None:
    """OUT_DIR/final from the last checkpoint (rank 0): weights (LoRA merged) + tokenizer."""
    D.barrier()
    if trainer.info.is_main:
        ckpt, final = latest_checkpoint(cfg.out_dir), Path(cfg.out_dir) / "final"
        shutil.rmtree(final, ignore_errors=True)
        if (ckpt / "model").is_dir():
            shutil.copytree(ckpt / "model", final)
        else:  # LoRA: base + adapter, merged
            model = build_model(cfg, torch.device("cpu"))
            state = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=False)
            model.load_state_dict(state["lora"], strict=False)
            save_model(merge_lora(model), final)
            shutil.rmtree(Path(cfg.out_dir) / "adapter", ignore_errors=True)
            shutil.copytree(ckpt / "adapter", Path(cfg.out_dir) / "adapter")
        tok.save(final)
    D.barrier()


def run_pretrain(cfg: TrainConfig) -> dict:
    """Pre-training on token shards with the causal-LM or blank-infilling objective."""
    info = D.init_distributed(cfg.device)
    tok = get_tokenizer(cfg)
    out = Path(cfg.out_dir)
    stream = TokenStream(_token_paths(cfg.train_data, tok, out / "data" / "train", info))
    if cfg.eval_data:
        eval_stream = TokenStream(_token_paths(cfg.eval_data, tok, out / "data" / "eval", info))
        train_w, _ = split_windows(stream, cfg.seq_len, 0.0)
        eval_w, _ = split_windows(eval_stream, cfg.seq_len, 0.0)
    else:
        eval_stream = stream
        train_w, eval_w = split_windows(stream, cfg.seq_len, cfg.eval_fraction)
    model = build_model(cfg, info.device)
    vocab = model.config.vocab_size
    blank = BlankInfilling(cfg.seq_len, *(tok.token_id(t) for t in ("[MASK]", "[gMASK]", "<sop>", "<eop>")),
                           **vars(cfg.blank), seed=cfg.seed) if cfg.objective == "blank" else None

    def collate_from(source: TokenStream):
        def collate(items):
            rows = []
            for item in items:
                if item is None:
                    rows.append(None)
                    continue
                sample, window = item
                tokens = source.read(window * cfg.seq_len, cfg.seq_len + 1)
                if tokens.max() >= vocab:
                    raise ValueError(f"token id {tokens.max()} in window {window} is >= the model vocab {vocab}")
                rows.append((sample, tokens) if blank else tokens)
            return blank.collate(rows) if blank else causal_collate(rows, cfg.seq_len)
        return collate

    gb = cfg.micro_batch_size * cfg.grad_accum * info.world
    train = _loader(cfg, window_plan(train_w, gb, cfg.seed), collate_from(stream), info)
    evaluation = _loader(cfg, window_plan(eval_w, gb, cfg.seed, shuffle=False), collate_from(eval_stream),
                         info) if len(eval_w) else None
    trainer = Trainer(cfg, model, LMObjective(), train, evaluation, info)
    result = trainer.fit()
    finish_stage(trainer, tok, cfg)
    return result


def start_stage(cfg: TrainConfig):
    """Process group, tokenizer and starting model of a fine-tuning stage."""
    info = D.init_distributed(cfg.device)
    tok = get_tokenizer(cfg)
    model = build_model(cfg, info.device)
    _check_vocab(tok, model)
    return info, tok, model


def run_sft(cfg: SFTConfig) -> dict:
    """Supervised fine-tuning on official-format conversations (assistant-only loss)."""
    info, tok, model = start_stage(cfg)
    examples, report = load_conversations(cfg.train_data, tok, cfg.seq_len, cfg.skip_invalid)
    if cfg.eval_data:
        held, _ = load_conversations(cfg.eval_data, tok, cfg.seq_len, cfg.skip_invalid)
    else:
        keep, out = _heldout(len(examples), cfg.eval_fraction, cfg.seed)
        examples, held = [examples[i] for i in keep], [examples[i] for i in out]
    if info.is_main:
        print(f"sft data: {report.summary()}; {len(examples)} train / {len(held)} eval conversations")
        for err in report.errors:
            print(f"  skipped: {err}")
    gb = cfg.micro_batch_size * cfg.grad_accum * info.world

    def loader(exs, shuffle_seed):
        plan = row_plan([len(e) for e in exs], cfg.seq_len, gb, shuffle_seed, cfg.packing, cfg.sorted_batching)
        return _loader(cfg, plan, lambda rows: collate_rows(
            [[exs[i] for i in r] if r is not None else None for r in rows], tok.pad_id, cfg.loss_weighting), info)

    trainer = Trainer(cfg, model, LMObjective(), loader(examples, cfg.seed), loader(held, 0) if held else None, info)
    result = trainer.fit()
    finish_stage(trainer, tok, cfg)
    return result


def _preference_data(cfg: DPOConfig | RMConfig, tok, info: D.DistInfo):
    """Train and held-out pairs (eval_data, else a seeded eval_fraction of train_data) and their loaders."""
    pairs, report = PreferencePairs.load(cfg.train_data, tok, cfg.seq_len, cfg.skip_invalid)
    if cfg.eval_data:
        held, _ = PreferencePairs.load(cfg.eval_data, tok, cfg.seq_len, cfg.skip_invalid)
    else:
        keep, out = _heldout(len(pairs), cfg.eval_fraction, cfg.seed)
        held = PreferencePairs([pairs.pairs[i] for i in out], pairs.ref_logps[out], pairs.pad_id)
        pairs = PreferencePairs([pairs.pairs[i] for i in keep], pairs.ref_logps[keep], pairs.pad_id)
    if info.is_main:
        print(f"{cfg.STAGE} data: {report.summary()}; {len(pairs)} train / {len(held)} eval pairs")
    gb = cfg.micro_batch_size * cfg.grad_accum * info.world
    train = _loader(cfg, pairs.plan(gb, cfg.seed), pairs.collate, info)
    evaluation = _loader(cfg, held.plan(gb, 0), held.collate, info) if len(held) else None
    return pairs, held, train, evaluation


def run_dpo(cfg: DPOConfig) -> dict:
    """DPO on preference pairs against the starting model as reference."""
    info, tok, model = start_stage(cfg)
    pairs, held, train, evaluation = _preference_data(cfg, tok, info)
    objective = DPOObjective(cfg.beta)
    trainer = Trainer(cfg, model, objective, train, evaluation, info)
    datasets = [d for d in (pairs, held) if len(d) and not d.has_reference]
    if datasets and cfg.reference == "precompute":
        # Only the pairs this run will read: 60 steps of 4 visit 240 of the speedrun's 1,500;
        # held-out pairs only when evaluation runs.
        evaluated = evaluation is not None and cfg.eval_every
        reads = {pairs: train.items(cfg.max_steps),
                 held: evaluation.items(min(cfg.eval_batches, evaluation.steps_per_epoch())) if evaluated else []}
        for d in datasets:  # before fit(): the policy still holds its starting weights, even on resume
            n = d.precompute_reference(trainer.engine, trainer.autocast, cfg.micro_batch_size, info.device,
                                       only=reads[d])
            if info.is_main:
                print(f"reference log-probs: {n} of {len(d)} pairs (those the run reads)")
    elif datasets:
        objective.reference = frozen_reference(cfg, trainer.raw, info, trainer.engine)
    result = trainer.fit()
    finish_stage(trainer, tok, cfg)
    return result


def run_rm(cfg: RMConfig) -> dict:
    """A reward model: the starting model plus a scalar head, trained on preference pairs
    (Bradley-Terry); the held-out pairs' accuracy is eval_rewards/accuracy in the log."""
    info, tok, model = start_stage(cfg)
    _, _, train, evaluation = _preference_data(cfg, tok, info)
    trainer = Trainer(cfg, RewardModel(model), BradleyTerryObjective(), train, evaluation, info)
    result = trainer.fit()
    finish_stage(trainer, tok, cfg)
    return result


def frozen_reference(cfg: TrainConfig, policy, info: D.DistInfo, engine=None):
    """The starting model, frozen: ``policy`` with its adapters off (LoRA; ``engine`` is what runs
    it, e.g. its compiled form), else a second copy built from the config."""
    if cfg.lora is not None:
        run = engine or policy

        def base(*args, **kwargs):
            with adapters_disabled(policy):
                return run(*args, **kwargs)
        return base
    ref = build_model(cfg, info.device, lora=False).eval().requires_grad_(False)
    return D.wrap_model(ref, "fsdp", info) if cfg.distributed == "fsdp" else ref
