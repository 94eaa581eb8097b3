"""Entry point shared by the CLI and Python callers."""

from __future__ import annotations

from pathlib import Path

from .pipeline import Runner
from .recipe import Recipe, load_recipe
from .report import write_report


def make_engine(name: str, num_cpus: int | None = None):
    if name == "local":
        from .engine_local import LocalEngine

        return LocalEngine()
    if name == "ray":
        from .engine_ray import RayEngine

        return RayEngine(num_cpus=num_cpus)
    raise ValueError(f"unknown engine {name!r} (local, ray)")


def run_recipe(recipe: Recipe | str | Path, engine: str = "local", output: str | Path | None = None,
               progress=None, num_cpus: int | None = None) -> dict:
    """Run a recipe end to end; returns the report (also written next to the outputs)."""
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, output)
    elif output is not None:
        recipe.output = Path(output)
    runner_engine = make_engine(engine, num_cpus)
    try:
        report = Runner(recipe, runner_engine, progress).run()
    finally:
        runner_engine.close()
    report["files"] = {k: str(v) for k, v in write_report(report, recipe.output).items()}
    return report
