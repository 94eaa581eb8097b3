"""`openglm data ...`: run recipes and inspect their outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(help="Bilingual data pipeline: clean, deduplicate, mix, tokenize and pack.", no_args_is_help=True,
                  add_completion=False, rich_markup_mode=None,
                  epilog="\b\nExample:\n  openglm data run recipe.yaml && openglm data inspect runs/data/tokens")


@app.command()
def run(recipe: Annotated[Path, typer.Argument(metavar="RECIPE", exists=True, dir_okay=False, help="recipe YAML")],
        engine: Annotated[str, typer.Option(help="local | ray")] = "local",
        output: Annotated[Path | None, typer.Option(help="output folder (default: the recipe's)")] = None,
        num_cpus: Annotated[int | None, typer.Option(help="CPUs for a local Ray cluster")] = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars (never shown when stderr "
                                            "is not a terminal)")] = False,
        allow_damaged: Annotated[bool | None, typer.Option(
            "--allow-damaged/--no-allow-damaged", help="keep going past damaged input files (truncated, corrupt): "
            "keep the records read before the damage, report it, exit 0 (default: the recipe's "
            "allow_damaged:, else no)", show_default=False)] = None) -> None:
    """Run a recipe: read, run every stage, write docs/, tokens/, rejects/ and report.{json,md,png}.

    A damaged input file fails the run (exit 1, no docs/ or tokens/) unless --allow-damaged (or the
    recipe's `allow_damaged: true`, which --no-allow-damaged overrides).

    \b
    Example:
      openglm data run recipe.yaml --output runs/data
    """
    from .progress import NullProgress, RichProgress
    from .recipe import RecipeError
    from .run import DamagedInputError, damage_line, run_recipe

    console = Console(stderr=True, soft_wrap=True)  # messages and paths stay whole lines, whatever the width
    try:
        if quiet or not console.is_terminal:  # bars in a log or pipe are noise (and leave blank lines)
            report = run_recipe(recipe, engine, output, NullProgress(), num_cpus, allow_damaged)
        else:
            with RichProgress(console) as progress:
                report = run_recipe(recipe, engine, output, progress, num_cpus, allow_damaged)
    except (RecipeError, FileNotFoundError) as e:
        console.print(f"[red]error:[/red] {escape(str(e))}", highlight=False)
        raise typer.Exit(2) from e
    except DamagedInputError as e:
        _print_table(console, e.report)
        console.print(f"report: {e.report['files']['md']}")
        # one unwrapped line naming every damaged file, so a log grep finds it
        console.print(f"[red]error:[/red] {escape(str(e))}; removed docs/ and tokens/ (the report counts what "
                      "was read; rerun with --allow-damaged to keep it)", soft_wrap=True, highlight=False)
        raise typer.Exit(1) from e
    _print_table(console, report)
    if report["damaged"]:
        console.print(f"[yellow]warning:[/yellow] {escape(damage_line(report['damaged']))} (allowed: kept what "
                      "was read)", soft_wrap=True, highlight=False)
    if "pack" in report:
        console.print(f"packed {report['pack']['n_tokens']:,} tokens into {report['pack']['dir']}")
    console.print(f"report: {report['files']['md']}")


def _print_table(console: Console, report: dict) -> None:
    table = Table(title=f"{report['recipe']} ({report['engine']})")
    for col in ("stage", "input", "kept", "rejected"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for s in report["stages"]:
        table.add_row(s["stage"], f"{s['input']:,}", f"{s['kept']:,}", f"{s['rejected']:,}")
    console.print(table)


@app.command()
def inspect(tokens_dir: Annotated[Path, typer.Argument(metavar="TOKENS_DIR", exists=True, file_okay=False,
                                                       help="a tokens/ folder")],
            show: Annotated[int, typer.Option(help="decode this many documents")] = 1) -> None:
    """Summarise token shards and decode the first documents.

    \b
    Example:
      openglm data inspect runs/data/tokens --show 3
    """
    from .pack import TokenShards, load_tokenizer_spec

    shards = TokenShards(tokens_dir)
    info = shards.index["tokenizer"]
    typer.echo(f"{len(shards):,} documents, {shards.n_tokens:,} tokens in {len(shards.index['shards'])} shard(s); "
               f"tokenizer {info['name']} (vocab {info['vocab_size']})")
    tok = load_tokenizer_spec(info["spec"])
    for i in range(min(show, len(shards))):
        typer.echo(f"--- document {i} ({len(shards.doc(i))} tokens)")
        typer.echo(tok.decode(shards.doc(i).tolist())[:500])


if __name__ == "__main__":
    app()
