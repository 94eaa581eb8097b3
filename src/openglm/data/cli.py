"""`openglm data ...`: run recipes and inspect their outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Bilingual data pipeline: clean, deduplicate, mix, tokenize and pack.", no_args_is_help=True)


@app.command()
def run(recipe: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="recipe YAML")],
        engine: Annotated[str, typer.Option(help="local | ray")] = "local",
        output: Annotated[Path | None, typer.Option(help="output folder (default: the recipe's)")] = None,
        num_cpus: Annotated[int | None, typer.Option(help="CPUs for a local Ray cluster")] = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")] = False) -> None:
    """Run a recipe: read, run every stage, write docs/, tokens/, rejects/ and report.{json,md,png}."""
    from .progress import NullProgress, RichProgress
    from .recipe import RecipeError
    from .run import run_recipe

    console = Console(stderr=True)
    try:
        if quiet:
            report = run_recipe(recipe, engine, output, NullProgress(), num_cpus)
        else:
            with RichProgress(console) as progress:
                report = run_recipe(recipe, engine, output, progress, num_cpus)
    except (RecipeError, FileNotFoundError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e
    table = Table(title=f"{report['recipe']} ({report['engine']})")
    for col in ("stage", "input", "kept", "rejected"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for s in report["stages"]:
        table.add_row(s["stage"], f"{s['input']:,}", f"{s['kept']:,}", f"{s['rejected']:,}")
    console.print(table)
    if "pack" in report:
        console.print(f"packed {report['pack']['n_tokens']:,} tokens into {report['pack']['dir']}")
    console.print(f"report: {report['files']['md']}")


@app.command()
def inspect(tokens_dir: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="a tokens/ folder")],
            show: Annotated[int, typer.Option(help="decode this many documents")] = 1) -> None:
    """Summarise token shards and decode the first documents."""
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
