"""`openglm pretrain | sft | dpo | rm CONFIG.yaml [--set key=value ...]`, and `openglm score RM_DIR FILE`.

Every field of the stage's config (see openglm/train/config.py) can be set in the YAML file
or overridden with --set (values are read as YAML: --set lr=1e-4 --set lora.rank=4).
Several processes: `torchrun --nproc_per_node N -m openglm.train.cli sft CONFIG.yaml`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Training: pre-training, SFT, DPO (LoRA optional), reward models; resumable and distributed.",
                  no_args_is_help=True, add_completion=False, rich_markup_mode=None)

ConfigArg = Annotated[Path | None, typer.Argument(metavar="CONFIG", help="YAML config (see configs/)", exists=True,
                                                  dir_okay=False)]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="override a config key: key=value")]
OutOpt = Annotated[str | None, typer.Option("--out-dir", "-o", help="output directory")]
StepsOpt = Annotated[int | None, typer.Option("--max-steps", min=1, help="optimizer steps")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="continue from the newest checkpoint in the output dir")]


def _config(cls, config, overrides, out_dir, max_steps, resume):
    from .config import parse_overrides

    if config is None and not overrides:  # every field at its default trains on nothing
        stage = cls.STAGE
        raise typer.BadParameter(f"no config given: openglm {stage} CONFIG.yaml, e.g. configs/nano_{stage}.yaml "
                                 "(or set every field with --set key=value)")

    try:
        extra = parse_overrides(overrides or [])
        if out_dir is not None:
            extra["out_dir"] = out_dir
        if max_steps is not None:
            extra["max_steps"] = max_steps
        if resume:
            extra["resume"] = True
        return cls.from_yaml(config, extra)
    except ValueError as e:  # pydantic's ValidationError too; the command line prints the cause in one line
        raise typer.BadParameter(str(e)) from e


@app.command()
def pretrain(config: ConfigArg = None, set_: SetOpt = None, out_dir: OutOpt = None, max_steps: StepsOpt = None,
             resume: ResumeOpt = False):
    """Pre-train on token shards (causal LM or GLM blank infilling).

    \b
    Example:
      openglm pretrain configs/nano_pretrain.yaml --set lr=1e-3 --max-steps 200
    """
    from .config import TrainConfig
    from .stages import run_pretrain

    _report(run_pretrain(_config(TrainConfig, config, set_, out_dir, max_steps, resume)))


@app.command()
def sft(config: ConfigArg = None, set_: SetOpt = None, out_dir: OutOpt = None, max_steps: StepsOpt = None,
        resume: ResumeOpt = False):
    """Supervised fine-tuning on {"messages": [...]} JSONL (loss on assistant tokens only).

    \b
    Example:
      openglm sft configs/nano_sft.yaml -o runs/sft --set lora.rank=8
    """
    from .config import SFTConfig
    from .stages import run_sft

    _report(run_sft(_config(SFTConfig, config, set_, out_dir, max_steps, resume)))


@app.command()
def dpo(config: ConfigArg = None, set_: SetOpt = None, out_dir: OutOpt = None, max_steps: StepsOpt = None,
        resume: ResumeOpt = False):
    """Direct preference optimisation on chosen/rejected pairs.

    \b
    Example:
      openglm dpo configs/nano_dpo.yaml -o runs/dpo
    """
    from .config import DPOConfig
    from .stages import run_dpo

    _report(run_dpo(_config(DPOConfig, config, set_, out_dir, max_steps, resume)))


@app.command()
def rm(config: ConfigArg = None, set_: SetOpt = None, out_dir: OutOpt = None, max_steps: StepsOpt = None,
       resume: ResumeOpt = False):
    """Train a reward model (a scalar head, Bradley-Terry loss) on chosen/rejected pairs.

    \b
    Example:
      openglm rm configs/nano_rm.yaml --set model=runs/nano_sft/final
      openglm score runs/nano_rm/final pairs.jsonl
    """
    from .config import RMConfig
    from .stages import run_rm

    _report(run_rm(_config(RMConfig, config, set_, out_dir, max_steps, resume)))


@app.command()
def score(
    model: Annotated[Path, typer.Argument(metavar="RM_DIR", help="a reward model folder (OUT/final of openglm rm)")],
    data: Annotated[Path, typer.Argument(metavar="FILE", help='JSONL: {"messages": [...]} or pair lines '
                                         '{"messages", "chosen", "rejected"}', exists=True, dir_okay=False)],
    batch_size: Annotated[int, typer.Option(min=1, help="conversations per forward pass")] = 8,
):
    """Score conversations with a reward model: one JSON line per input line on stdout; for pair
    lines, the share whose chosen reply scores higher on stderr.

    \b
    Example:
      openglm score runs/nano_rm/final pairs.jsonl > scores.jsonl
    """
    import json
    import sys

    from .reward_model import load_reward_model, score_jsonl

    reward_model, tok = load_reward_model(model)
    records = score_jsonl(reward_model, tok, data, batch_size)
    for record in records:
        typer.echo(json.dumps(record))
    wins = [r["chosen"] > r["rejected"] for r in records if "chosen" in r]
    if wins:
        print(f"pair accuracy: {sum(wins) / len(wins):.4f} ({sum(wins)} of {len(wins)} pairs)", file=sys.stderr)


def _report(result: dict) -> None:
    from . import distributed as D

    if result and D.init_distributed().is_main:
        keys = [k for k in ("loss", "eval_loss", "rewards/accuracy", "rewards/margin", "eval_rewards/accuracy",
                            "tokens_per_s") if k in result]
        typer.echo("final: " + "  ".join(f"{k} {result[k]:.4g}" for k in keys))
    D.close()


if __name__ == "__main__":
    app()
