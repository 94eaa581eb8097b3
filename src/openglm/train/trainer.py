"""The training loop every stage shares.

One optimizer step: fetch this process's micro-batches, sum their loss normalisers over
every micro-batch and process, then forward/backward each micro-batch with its loss sum
scaled by world/normaliser (gradients are then those of the global-batch mean, however the
batch is split), clip, AdamW step, LR schedule. Rank 0 logs JSONL, TensorBoard and a PNG
loss curve, with tokens/s and MFU, evaluates on the held-out split and writes checkpoints.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import yaml

from ..model.glm import GLM, IGNORE, count_parameters, document_lengths
from . import distributed as D
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import StepBatches


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of cfg.lr at optimizer step ``step`` (0-based): linear warmup, then cosine
    to min_lr_ratio, or WSD (warmup, stable, then linear decay over the last decay_fraction)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    lo = cfg.min_lr_ratio
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "wsd":
        decay_steps = max(1, int(cfg.decay_fraction * cfg.max_steps))
        into = step - (cfg.max_steps - decay_steps)
        return 1.0 if into < 0 else 1.0 - (1.0 - lo) * min(1.0, (into + 1) / decay_steps)
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return lo + (1.0 - lo) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def batch_flops(cfg, batch: dict) -> tuple[float, int]:
    """Training FLOPs of one micro-batch and its tokens, padding left out (PaLM appendix B, by
    what this code computes): 6 x body matmul parameters per token, 6 x the head's only where a
    target is (the fused head skips the rest), and 12 x layers x q_size per pair of a token and a
    key in its context (its own document when `doc_ids` packs several into a row)."""
    ids, targets, docs = batch["input_ids"], batch.get("targets"), batch.get("doc_ids")
    if docs is None:
        tokens, pairs = ids.numel(), ids.numel() * ids.shape[1]
    else:  # padding (doc id -1) is one run at the end of a row: its square comes off
        pads = (docs < 0).sum(1).tolist()
        tokens = ids.numel() - sum(pads)
        pairs = sum(sum(n * n for n in row) - p * p for row, p in zip(document_lengths(docs), pads))
    head = cfg.vocab_size * cfg.hidden_size
    body = cfg.num_layers * (cfg.hidden_size * (cfg.q_size + 2 * cfg.kv_size) + cfg.q_size * cfg.hidden_size
                             + 3 * cfg.hidden_size * cfg.ffn_hidden_size)
    outputs = tokens if targets is None else int((targets != IGNORE).sum())
    return 6 * body * tokens + 6 * head * outputs + 12 * cfg.num_layers * cfg.q_size * pairs, tokens


def measure_peak_flops(device: torch.device, dtype: torch.dtype = torch.bfloat16, n: int = 2048) -> float:
    """Best of a few square matmuls: the machine's practical peak for MFU."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(8):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


class Trainer:
    """Runs ``objective`` over ``train`` batches on ``model``; see the module docstring.

    ``objective`` has ``normalizer(batch)`` and ``__call__(model, batch) -> (loss_sum,
    metric_sums)``; ``extra_state`` is stored in every checkpoint (e.g. the tokenizer name).
    """

    def __init__(self, cfg: TrainConfig, model: GLM, objective, train: StepBatches,
                 evaluation: StepBatches | None = None, info: D.DistInfo | None = None):
        self.cfg, self.objective, self.train, self.evaluation = cfg, objective, train, evaluation
        self.info = info or D.DistInfo()
        self.raw = model
        self.model = D.wrap_model(model, cfg.distributed, self.info)
        self.engine = torch.compile(self.model) if cfg.compile else self.model
        params = [p for p in self.model.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        # the fused kernel (CPU and CUDA) is the fastest AdamW; FSDP's sharded DTensors take foreach
        fused = cfg.distributed != "fsdp"
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=fused or None)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, cfg))
        self.precision = D.pick_precision(cfg.precision, self.info.device)
        self.dtype = D.HALF_DTYPES.get(self.precision)
        self.scaler = torch.amp.GradScaler(self.info.device.type, enabled=self.precision == "fp16")
        self.step = 0
        self.out = Path(cfg.out_dir)
        self.history: list[dict] = []
        self._tb = None
        self.n_params = count_parameters(model)
        self.peak = cfg.peak_flops

    # ---- pieces -----------------------------------------------------------------
    def autocast(self):
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.info.device.type, dtype=self.dtype)

    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.info.device, non_blocking=True) for k, v in batch.items()}

    def _reduce(self, sums: dict[str, torch.Tensor]) -> dict[str, float]:
        keys = sorted(sums)
        flat = D.all_reduce_sum(torch.stack([sums[k].detach().double().cpu() for k in keys]))
        return dict(zip(keys, flat.tolist()))

    def train_step(self, micro_batches: list[dict]) -> dict[str, float]:
        norms = torch.stack([torch.as_tensor(self.objective.normalizer(b), dtype=torch.float64) for b in micro_batches])
        total = max(D.all_reduce_sum(norms.sum()).item(), 1e-12)
        sums: dict[str, torch.Tensor] = {}
        tokens = flops = 0
        for i, batch in enumerate(micro_batches):
            batch_work, batch_tokens = batch_flops(self.raw.config, batch)
            flops, tokens = flops + batch_work, tokens + batch_tokens
            batch = self._to_device(batch)
            with D.gradient_sync(self.model, i == len(micro_batches) - 1):
                with self.autocast():
                    loss_sum, metrics = self.objective(self.engine, batch)
                # DDP/FSDP average gradients over processes; scaling by world makes it the sum
                self.scaler.scale(loss_sum * (self.info.world / total)).backward()
            for k, v in {"loss": loss_sum, **metrics}.items():
                sums[k] = sums.get(k, 0) + v.detach().double()
        self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.requires_grad]
        norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf"))
        norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        sums["tokens"] = torch.tensor(float(tokens), dtype=torch.float64)
        sums["flops"] = torch.tensor(float(flops), dtype=torch.float64)
        out = self._reduce(sums)
        out = {k: (v if k in ("tokens", "flops") else v / total) for k, v in out.items()}
        return {**out, "lr": lr, "grad_norm": float(norm)}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        sums: dict[str, torch.Tensor] = {}
        total = torch.zeros((), dtype=torch.float64)
        for n, micro_batches in enumerate(self.evaluation.epoch(0)):
            if n >= self.cfg.eval_batches:
                break
            for batch in micro_batches:
                batch = self._to_device(batch)
                total += torch.as_tensor(self.objective.normalizer(batch), dtype=torch.float64).cpu()
                with self.autocast():
                    loss_sum, metrics = self.objective(self.engine, batch)
                for k, v in {"loss": loss_sum, **metrics}.items():
                    sums[k] = sums.get(k, 0) + v.detach().double()
        self.model.train()
        sums["_n"] = total
        out = self._reduce(sums)
        n = max(out.pop("_n"), 1e-12)
        return {f"eval_{k}": v / n for k, v in out.items()}

    def save(self) -> Path | None:
        return save_checkpoint(self.out, self.step, self.model, self.raw, self.optimizer, self.scheduler,
                               {"data": self.train.state_dict(), "config": self.cfg.to_dict()},
                               self.cfg.keep_last, self.info)

    def resume(self) -> bool:
        path = latest_checkpoint(self.out)
        if path is None:
            return False
        state = load_checkpoint(path, self.model, self.optimizer, self.scheduler, self.info)
        self.step = state["step"]
        # the learning rate of the next step by this run's schedule (a resume may change max_steps)
        self.scheduler.last_epoch = self.step - 1
        self.scheduler.step()
        self.train.load_state_dict(state["data"])
        if self.info.is_main:
            self._truncate_log(self.step)
        return True

    # ---- logging -----------------------------------------------------------------
    def _log(self, record: dict) -> None:
        if not self.info.is_main:
            return
        self.history.append(record)
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, record["step"])

    def _truncate_log(self, step: int) -> None:
        """Drop records after ``step`` (written by a run that died after its last checkpoint)."""
        log = self.out / "log.jsonl"
        if log.exists():
            kept = [r for r in map(json.loads, log.read_text().splitlines()) if r["step"] <= step]
            log.write_text("".join(json.dumps(r) + "\n" for r in kept))
            self.history = kept

    def plot(self) -> Path | None:
        """loss.png: training and evaluation loss against step."""
        try:
            import matplotlib
        except ImportError:
            return None
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        for key, label in (("loss", "train"), ("eval_loss", "eval")):
            pts = [(r["step"], r[key]) for r in self.history if key in r]
            if pts:
                ax.plot(*zip(*pts), label=label, marker="o" if label == "eval" else None)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(f"{self.cfg.STAGE}: {self.raw.config.name}, {self.n_params / 1e6:.1f}M params")
        ax.legend()
        fig.tight_layout()
        path = self.out / "loss.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path

    def _open_tensorboard(self) -> None:
        if not (self.cfg.tensorboard and self.info.is_main):
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print("tensorboard is not installed (pip install 'openglm[train]'); logging to log.jsonl only")
            return
        self._tb = SummaryWriter(str(self.out / "tb"), purge_step=self.step + 1)

    # ---- the loop ----------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Train to cfg.max_steps (resuming first when cfg.resume); returns the last record."""
        cfg = self.cfg
        if self.info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        D.barrier()
        if cfg.resume and self.resume():
            if self.info.is_main:
                print(f"resumed from step {self.step}")
        else:
            if not cfg.resume and latest_checkpoint(self.out) is not None:
                # a fresh run would interleave its checkpoints with the old ones (and keep_last
                # could delete the new ones), so refuse instead of guessing
                raise ValueError(f"{self.out} already holds checkpoints of an earlier run; pass --resume "
                                 "(resume: true) to continue it, or choose another out_dir")
            if self.info.is_main:
                (self.out / "log.jsonl").unlink(missing_ok=True)
        self._open_tensorboard()
        if self.peak is None:
            self.peak = measure_peak_flops(self.info.device, self.dtype or torch.float32)  # peak of the precision used
        last: dict[str, float] = {}
        with _progress(cfg.progress and self.info.is_main, cfg.STAGE, cfg.max_steps, self.step) as advance:
            while self.step < cfg.max_steps:
                t0 = time.perf_counter()
                micro_batches = self.train.next()
                record = self.train_step(micro_batches)
                dt = time.perf_counter() - t0
                self.step += 1
                flops = record.pop("flops")
                record.update(step=self.step, tokens_per_s=record["tokens"] / dt,
                              mfu=flops / dt / (self.peak * self.info.world), step_time=dt)
                if hasattr(self.train, "report"):  # a data source's own figures (RL: rewards, rollout speed)
                    record.update(self.train.report())
                last = record
                if cfg.eval_every and self.evaluation and self.step % cfg.eval_every == 0:
                    record.update(self.evaluate())
                if self.step % cfg.log_every == 0 or "eval_loss" in record or self.step == cfg.max_steps:
                    self._log({"step": self.step, **{k: v for k, v in record.items() if k != "step"}})
                if cfg.save_every and self.step % cfg.save_every == 0 or self.step == cfg.max_steps:
                    self.save()
                    if self.info.is_main:
                        self.plot()
                advance(record)
        if self._tb is not None:
            self._tb.close()
        return last


class _progress:
    """A rich progress bar on rank 0 (a no-op elsewhere) showing loss and tokens/s."""

    def __init__(self, enabled: bool, name: str, total: int, done: int):
        self.enabled, self.name, self.total, self.done = enabled, name, total, done

    def __enter__(self):
        if not self.enabled:
            return lambda record: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[info]}"), TimeRemainingColumn())
        self.bar.start()
        task = self.bar.add_task(self.name, total=self.total, completed=self.done, info="")

        def advance(record: dict) -> None:
            info = f"loss {record['loss']:.4f}  {record['tokens_per_s']:.0f} tok/s  mfu {record['mfu']:.1%}"
            if "eval_loss" in record:
                info += f"  eval {record['eval_loss']:.4f}"
            self.bar.update(task, advance=1, info=info)
        return advance

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.stop()
        return False

