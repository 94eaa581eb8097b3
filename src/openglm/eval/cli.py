"""`openglm eval ...`: evaluation sub-commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from openglm.loading import Quantize

app = typer.Typer(help="Evaluate models: agent tool use on held-out tasks, in-context copying.", no_args_is_help=True,
                  add_completion=False, rich_markup_mode=None,
                  epilog="\b\nExample:\n  openglm eval agent --n 20")
ModelOpt = Annotated[Path | None, typer.Option("--model", "-m", help="checkpoint directory (default: the "
                                               "embedded nano agent model)")]
QuantizeOpt = Annotated[Quantize | None, typer.Option(help="quantize the weights as they load (int8 or int4)")]


@app.command("agent")
def agent_eval(
    model: ModelOpt = None,
    n: Annotated[int, typer.Option(min=1, help="number of held-out tasks")] = 50,
    seed: Annotated[int, typer.Option(help="task generator seed")] = 0,
    baseline: Annotated[bool, typer.Option(help="also ask each question with no tools offered")] = True,
    out: Annotated[Path | None, typer.Option(help="write summary.json and summary.md here")] = None,
    guided_tools: Annotated[bool, typer.Option(help="decode text or calls of offered tools whose arguments "
                                               "fit their schemas (as the agent does); off: the raw model")] = True,
    compiled: Annotated[bool, typer.Option("--compile", help="decode through a compiled step (faster tokens "
                                           "after a compile of ~1 min)")] = False,
    quantize: QuantizeOpt = None,
) -> None:
    """Tool-use metrics on held-out synthetic tasks: valid calls, tool choice, argument match,
    and answer accuracy with tools vs without.

    \b
    Example:
      openglm eval agent --n 20 --out runs/eval
    """
    from openglm.agent import LocalBackend
    from openglm.data.synth import generate_tasks
    from openglm.loading import load_for_inference

    from .agent import evaluate, markdown, to_json

    m, tok = load_for_inference(model, compiled=compiled, quantize=quantize)
    backend = LocalBackend(m, tok, guided_tools=guided_tools)
    summary = evaluate(backend, generate_tasks(n, seed=seed, split="heldout"), with_baseline=baseline)
    table = markdown(summary)
    print(table)
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(to_json(summary))
        (out / "summary.md").write_text(table + "\n")


@app.command("induction")
def induction_eval(
    model: ModelOpt = None,
    rows: Annotated[int, typer.Option(min=1, help="random rows, one repeated span each")] = 64,
    seq_len: Annotated[int, typer.Option(help="tokens per row")] = 128,
    seed: Annotated[int, typer.Option(help="seed of the random rows")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    quantize: QuantizeOpt = None,
) -> None:
    """In-context copying: next-token accuracy inside a span the model has seen earlier in the
    row (what copying a name into a tool call needs), against chance.

    \b
    Example:
      openglm eval induction --model runs/speedrun/final --json
    """
    import json

    from openglm.io import load_model
    from openglm.loading import load_for_inference

    from .induction import induction_score

    # The probe feeds token ids, so a checkpoint needs no tokenizer (the speedrun's drill has none).
    scheme = quantize.value if quantize else None
    m = load_model(model, quantize=scheme).for_inference() if model else load_for_inference(None, quantize=scheme)[0]
    score = induction_score(m, rows=rows, seq_len=seq_len, seed=seed)
    if json_out:
        print(json.dumps(score.to_dict()))
    else:
        print(f"induction accuracy {score.accuracy:.1%} on {score.targets} tokens; loss {score.loss:.3f} nats "
              f"(chance {score.chance_loss:.3f})")
