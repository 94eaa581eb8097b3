"""Entry point shared by the CLI and Python callers."""

from __future__ import annotations

import shutil
from pathlib import Path

from .pipeline import Runner
from .recipe import Recipe, load_recipe
from .report import write_report


class DamagedInputError(RuntimeError):
    """Some input files were damaged and the caller did not allow it; ``report`` holds the run's
    figures (written to report.json too), the damage among the read rejects."""

    def __init__(self, report: dict):
        self.report = report
        super().__init__(damage_line(report["damaged"]))


def damage_line(damaged: list[str]) -> str:
    return f"{len(damaged)} damaged input file(s): " + "; ".join(damaged)


def make_engine(name: str, num_cpus: int | None = None):
    if name == "local":
        from .engine_local import LocalEngine

        return LocalEngine()
    if name == "ray":
        from .engine_ray import RayEngine

        return RayEngine(num_cpus=num_cpus)
    raise ValueError(f"unknown engine {name!r} (local, ray)")


def run_recipe(recipe: Recipe | str | Path, engine: str = "local", output: str | Path | None = None,
               progress=None, num_cpus: int | None = None, allow_damaged: bool | None = None) -> dict:
    """Run a recipe end to end; returns the report (also written next to the outputs).

    A damaged input file (truncated, corrupt) has its readable records counted like any others and
    one ``damaged_file`` reject. Unless ``allow_damaged``, the run then raises ``DamagedInputError``
    after writing the report and rejects, and removes docs/, tokens/ and _work/ so that nothing
    downstream takes the partial output for a finished one and a rerun starts afresh.
    ``allow_damaged=None`` (the default) takes the recipe's ``allow_damaged:`` (false if absent)."""
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, output)
    elif output is not None:
        recipe.output = Path(output)
    if allow_damaged is None:
        allow_damaged = recipe.allow_damaged
    runner_engine = make_engine(engine, num_cpus)
    try:
        report = Runner(recipe, runner_engine, progress).run()
    finally:
        runner_engine.close()
    failed = bool(report["damaged"]) and not allow_damaged
    if report["damaged"]:
        report["allow_damaged"] = allow_damaged
    if failed:
        for sub in ("_work", "docs", "tokens"):
            shutil.rmtree(recipe.output / sub, ignore_errors=True)
        report["failed"] = damage_line(report["damaged"])
    report["files"] = {k: str(v) for k, v in write_report(report, recipe.output).items()}
    if failed:
        raise DamagedInputError(report)
    return report
