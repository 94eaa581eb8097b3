"""`openglm rl CONFIG`, `openglm selfcritique ...`, `openglm self-contrast ...`."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from openglm.train.cli import ConfigArg, OutOpt, ResumeOpt, SetOpt, StepsOpt, _config, _report


def rl(config: ConfigArg = None, set_: SetOpt = None, out_dir: OutOpt = None, max_steps: StepsOpt = None,
       resume: ResumeOpt = False):
    """Policy optimisation (GRPO or PPO-clip) on rewards from rule checkers, a reward model or your
    own function; rollouts can run the real agent loop and tools.

    \b
    Example:
      openglm rl configs/nano_rl.yaml -o runs/rl --max-steps 20
    """
    from .rl import RLConfig, run_rl

    _report(run_rl(_config(RLConfig, config, set_, out_dir, max_steps, resume)))


InputArg = Annotated[Path, typer.Argument(metavar="INPUT", help="JSONL file", exists=True, dir_okay=False)]
DataOutOpt = Annotated[Path, typer.Option("--out", "-o", help="output directory")]
ModelOpt = Annotated[Path | None, typer.Option("--model", "-m", help="checkpoint directory to sample from; "
                                               "default: the embedded nano agent model")]
TokensOpt = Annotated[int, typer.Option("--max-new-tokens", min=1, help="reply length limit in tokens")]
TopPOpt = Annotated[float, typer.Option(min=0.0, max=1.0, help="nucleus sampling: keep this much probability mass")]
SeedOpt = Annotated[int, typer.Option(help="sampling seed (problem i uses seed + i)")]


def selfcritique(
    input: InputArg,
    out: DataOutOpt,
    model: ModelOpt = None,
    samples: Annotated[int, typer.Option(min=1, help="answers sampled per problem (one batch)")] = 4,
    critic: Annotated[str, typer.Option(help="rule (final answer against the reference), self (the sampling "
                                        "model), model:DIR, or openai:URL (with --critic-model; key from "
                                        "OPENAI_API_KEY)")] = "rule",
    critic_model: Annotated[str | None, typer.Option(help="model name for an openai: critic")] = None,
    critic_prompt: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="critique prompt template "
                                                       "with {question}, {reference} and {answer}")] = None,
    critic_tokens: Annotated[int, typer.Option(min=1, help="critique length limit in tokens")] = 128,
    min_score: Annotated[float, typer.Option(min=0.0, max=1.0, help="RFT keeps a best answer scoring at least "
                                             "this")] = 0.7,
    min_margin: Annotated[float, typer.Option(min=0.0, max=1.0, help="DPO pairs best and worst when their "
                                              "scores differ by at least this")] = 0.3,
    max_new_tokens: TokensOpt = 256,
    temperature: Annotated[float, typer.Option(min=0.0, help="sampling temperature")] = 0.8,
    top_p: TopPOpt = 0.95,
    seed: SeedOpt = 0,
):
    """ChatGLM-Math's self-critique: sample answers to each problem, grade them with a critic, write the
    best for rejective fine-tuning (rft.jsonl) and best-vs-worst DPO pairs (dpo.jsonl), with report.json.

    INPUT holds {"messages": [...], "answer": REF} or {"question": "...", "answer": REF} per line
    (answer optional unless --critic rule).

    \b
    Example:
      openglm selfcritique problems.jsonl -o runs/critique --samples 8 --critic self
    """
    import os

    from openglm.infer import Sampling
    from openglm.loading import load_for_inference

    from .selfcritique import CRITIC_PROMPT, EndpointCritic, ModelCritic, RuleCritic, read_problems, self_critique

    kind, _, where = critic.partition(":")
    if critic not in ("rule", "self") and not (kind in ("model", "openai") and where):
        raise typer.BadParameter(f"unknown critic {critic!r}: choose rule, self, model:DIR or openai:URL",
                                 param_hint="--critic")
    if kind == "openai" and not critic_model:
        raise typer.BadParameter("--critic openai:URL needs --critic-model NAME", param_hint="--critic-model")
    template = critic_prompt.read_text(encoding="utf-8") if critic_prompt else CRITIC_PROMPT
    if "{answer}" not in template:
        raise typer.BadParameter(f"{critic_prompt} has no {{answer}} for the critic to read",
                                 param_hint="--critic-prompt")
    sampling = Sampling(temperature, top_p=top_p, seed=seed)  # before loading: a bad value fails fast
    problems = read_problems(input)
    policy = load_for_inference(model)
    if critic == "rule":
        grader = RuleCritic()
    elif kind == "openai":
        grader = EndpointCritic(where, critic_model, os.environ.get("OPENAI_API_KEY"), template, critic_tokens)
    else:
        grader = ModelCritic(*(policy if critic == "self" else load_for_inference(where)), template, critic_tokens)
    with _progress("self-critique", len(problems)) as advance:
        rft, dpo, report = self_critique(*policy, problems, grader, critic_name=critic, samples=samples,
                                         max_new_tokens=max_new_tokens, sampling=sampling, min_score=min_score,
                                         min_margin=min_margin, progress=advance)
    _write(out, {"rft.jsonl": rft, "dpo.jsonl": dpo}, report)


def self_contrast(
    input: InputArg,
    out: DataOutOpt,
    model: ModelOpt = None,
    samples: Annotated[int, typer.Option(min=1, help="replies sampled per prompt (one batch)")] = 4,
    similarity: Annotated[str, typer.Option(help="exact (same call or text), chars (difflib ratio) or tokens "
                                            "(token-set Jaccard)")] = "chars",
    max_similarity: Annotated[float, typer.Option(min=0.0, max=1.0, help="a wrong sample is a negative only "
                                                  "when less similar than this to the target")] = 0.9,
    pairs_per_prompt: Annotated[int, typer.Option(min=1, help="most negatives kept per prompt, most "
                                                  "dissimilar first")] = 1,
    max_new_tokens: TokensOpt = 256,
    temperature: Annotated[float, typer.Option(min=0.0, help="sampling temperature")] = 1.0,
    top_p: TopPOpt = 0.95,
    seed: SeedOpt = 0,
):
    """Self-Contrast: sample replies to each prompt of an SFT file and pair the target reply (chosen) with
    wrong, dissimilar samples (rejected) as DPO data: dpo.jsonl and report.json.

    The target is the first assistant turn after the last user message of each {"messages": [...]} line.

    \b
    Example:
      openglm self-contrast agent.jsonl -o runs/contrast --samples 8 --pairs-per-prompt 2
    """
    from openglm.infer import Sampling
    from openglm.loading import load_for_inference

    from .self_contrast import SIMILARITIES, read_items
    from .self_contrast import self_contrast as contrast

    if similarity not in SIMILARITIES:
        raise typer.BadParameter(f"choose one of {', '.join(SIMILARITIES)}", param_hint="--similarity")
    sampling = Sampling(temperature, top_p=top_p, seed=seed)
    items = read_items(input)
    policy = load_for_inference(model)
    with _progress("self-contrast", len(items)) as advance:
        pairs, report = contrast(*policy, items, samples=samples, pairs_per_prompt=pairs_per_prompt,
                                 similarity=similarity, max_similarity=max_similarity,
                                 max_new_tokens=max_new_tokens, sampling=sampling, progress=advance)
    _write(out, {"dpo.jsonl": pairs}, report)


@contextmanager
def _progress(what: str, total: int):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    # a terminal only, and transient: the summary printed next says it all, and an error stays one line
    with Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console,
                  transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)


def _write(out: Path, files: dict[str, list[dict]], report) -> None:
    """The JSONL outputs and report.json into ``out``; the summary on stdout."""
    from .samples import write_jsonl

    out.mkdir(parents=True, exist_ok=True)
    for name, rows in files.items():
        write_jsonl(out / name, rows)
    (out / "report.json").write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")
    typer.echo(f"{report.summary()}\nwrote {', '.join(str(out / n) for n in [*files, 'report.json'])}")
