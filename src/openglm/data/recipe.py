"""Recipe files: one YAML document describing a whole run.

    name: sample
    output: out/sample              # relative to the working directory; inputs to the recipe file
    tokenizer: default              # or a tokenizer folder/file for openglm.tokenizer.load_tokenizer
    allow_damaged: false            # true: a damaged input file is reported, not fatal (as --allow-damaged)
    inputs:
      - sample: train               # the corpus shipped with openglm
      - {path: "web/*.jsonl.zst", source: web}
    stages:
      - normalize: {t2s: true}
      - langid: {keep: [zh, en, code]}
      - quality
      - safety
      - pii
      - exact_dedup
      - fuzzy_dedup: {threshold: 0.6}
      - mix: {weights: {peoples_daily_1998: 2.0}}
      - pack: {tokens_per_shard: 1000000}
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .dedup import ExactDedup, FuzzyDedup
from .mix import Mix
from .pack import Pack
from .readers import InputSpec
from .stages.base import Stage
from .stages.langid import Langid
from .stages.normalize import Normalize
from .stages.pii import Pii
from .stages.quality import Quality
from .stages.safety import Safety

STAGES: dict[str, type[Stage]] = {cls.type_name(): cls for cls in
                                  (Normalize, Langid, Quality, Safety, Pii, ExactDedup, FuzzyDedup, Mix, Pack)}
TOP_KEYS = {"name", "output", "tokenizer", "inputs", "stages", "docs_per_shard", "allow_damaged"}
# Keys that do not change the outputs, so not part of the fingerprint that decides whether _work/ is reused.
UNFINGERPRINTED = {"output", "allow_damaged"}


class RecipeError(ValueError):
    pass


@dataclass
class Recipe:
    name: str
    output: Path
    inputs: list[InputSpec]
    stages: list[Stage]
    tokenizer: str = "default"
    docs_per_shard: int = 50_000
    allow_damaged: bool = False  # run_recipe's default when its caller (the CLI flag) does not say
    fingerprint: str = ""
    config: dict = field(default_factory=dict)

    @property
    def pack(self) -> Pack | None:
        return self.stages[-1] if self.stages and isinstance(self.stages[-1], Pack) else None


def build_stage(entry, where: str) -> Stage:
    if isinstance(entry, str):
        kind, options = entry, {}
    elif isinstance(entry, dict) and len(entry) == 1:
        kind, options = next(iter(entry.items()))
        options = options or {}
    else:
        raise RecipeError(f"{where}: a stage is a name or a one-key mapping {{name: options}}, got {entry!r}")
    if kind not in STAGES:
        raise RecipeError(f"{where}: unknown stage {kind!r}; known: {', '.join(STAGES)}")
    if not isinstance(options, dict):
        raise RecipeError(f"{where}: options of {kind!r} must be a mapping, got {options!r}")
    cls = STAGES[kind]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(options) - known
    if unknown:
        raise RecipeError(f"{where}: stage {kind!r} has no option(s) {sorted(unknown)}; "
                          f"options: {sorted(known - {'name'})}")
    try:
        return cls(**options)
    except (TypeError, ValueError) as e:
        raise RecipeError(f"{where}: {e}") from e


def parse_recipe(config: dict, base_dir: Path, output: str | Path | None = None, where: str = "recipe") -> Recipe:
    if not isinstance(config, dict):
        raise RecipeError(f"{where}: the recipe must be a mapping")
    unknown = set(config) - TOP_KEYS
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(TOP_KEYS)}")
    if not isinstance(config.get("allow_damaged", False), bool):
        raise RecipeError(f"{where}: 'allow_damaged' must be true or false, got {config['allow_damaged']!r}")
    if not config.get("inputs"):
        raise RecipeError(f"{where}: 'inputs' is empty")
    inputs = []
    for i, entry in enumerate(config["inputs"]):
        if not isinstance(entry, dict):
            raise RecipeError(f"{where}: inputs[{i}] must be a mapping, got {entry!r}")
        try:
            spec = InputSpec(**entry)
        except (TypeError, ValueError) as e:
            raise RecipeError(f"{where}: inputs[{i}]: {e}") from e
        if not spec.sample and not Path(spec.path).is_absolute():
            spec.path = str(base_dir / spec.path)
        inputs.append(spec)
    stages = [build_stage(entry, f"{where}: stages[{i}]") for i, entry in enumerate(config.get("stages") or [])]
    names = [s.name for s in stages]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise RecipeError(f"{where}: stage names must be unique, repeated: {sorted(dupes)} (set 'name:')")
    if any(isinstance(s, Pack) for s in stages[:-1]):
        raise RecipeError(f"{where}: 'pack' must be the last stage")
    # Inputs are relative to the recipe file; the output, like any tool's, to the working directory.
    out = Path(output if output is not None else config.get("output", "out"))
    canonical = json.dumps({k: v for k, v in config.items() if k not in UNFINGERPRINTED}, sort_keys=True, default=str)
    return Recipe(name=str(config.get("name", "run")), output=out, inputs=inputs, stages=stages,
                  tokenizer=str(config.get("tokenizer", "default")),
                  docs_per_shard=int(config.get("docs_per_shard", 50_000)),
                  allow_damaged=config.get("allow_damaged", False),
                  fingerprint=hashlib.sha256(canonical.encode()).hexdigest()[:16], config=config)


def load_recipe(path: str | Path, output: str | Path | None = None) -> Recipe:
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {e}") from e
    return parse_recipe(config, path.parent, output, where=str(path))
