"""Runs a recipe: the same plan and driver for every engine; engines only differ in where the
per-document work (``process_unit``, ``pack_unit``) runs.

The stage list is cut into segments at barrier stages (dedup, mix). A segment streams its input
(the recipe's inputs, then the previous segment's spill) through its map stages, computes the
barrier's keys, and writes survivors to a spill; the barrier then decides on the driver, and the
next segment applies that decision while reading. Finished segments are recorded in
``_work/`` so a rerun of the same recipe skips them; packing resumes per shard.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .accounting import Accounting
from .pack import Pack, ShardWriter, encode_chunked, encode_row, load_tokenizer_spec
from .readers import DAMAGED, READ, ShardedJsonlWriter, Unit, expand_inputs, open_binary, read_spill, read_unit
from .recipe import Recipe
from .records import ORD_SHIFT, TOKENS_SCHEMA, make_row, output_doc, reject, reject_record
from .stages.base import BarrierStage, Decision, KeyTable, MapStage

BATCH_DOCS = 256


@dataclass
class SegmentPlan:
    """Everything a worker needs for one segment (picklable: models load lazily per worker)."""

    index: int
    maps: list[MapStage] = field(default_factory=list)
    barrier: BarrierStage | None = None  # computes keys at the end of this segment
    previous: str = ""  # the barrier whose decision this segment applies while reading
    decision: Decision | None = None
    tokenizer: str = "default"
    count_tokens: bool = False  # the first segment measures every document once


def plan_segments(recipe: Recipe) -> list[SegmentPlan]:
    segments = [SegmentPlan(0, tokenizer=recipe.tokenizer, count_tokens=True)]
    for stage in recipe.stages:
        if isinstance(stage, Pack):
            continue
        if isinstance(stage, BarrierStage):
            segments[-1].barrier = stage
            segments.append(SegmentPlan(len(segments), previous=stage.name, tokenizer=recipe.tokenizer))
        else:
            segments[-1].maps.append(stage)
    return segments


def _reject_with_tokens(row: dict, plan: SegmentPlan, stage: str, result) -> None:
    reason, detail = result if isinstance(result, tuple) else (result, "")
    if plan.count_tokens:
        row["_tokens"] = len(encode_chunked(load_tokenizer_spec(plan.tokenizer), row["text"]))
    reject(row, stage, reason, detail)


def _finish_batch(batch: list[dict], plan: SegmentPlan) -> list[dict]:
    kept = [r for r in batch if not r["_stage"]]
    if plan.count_tokens and kept:
        tokenizer = load_tokenizer_spec(plan.tokenizer)
        for row in kept:
            row["_tokens"] = len(encode_chunked(tokenizer, row["text"]))
    if plan.barrier is not None and kept:
        keys_fn = getattr(plan.barrier, "keys", None)
        keys = keys_fn(kept) if keys_fn else [plan.barrier.key(r) for r in kept]
        for row, key in zip(kept, keys):
            row["_key"] = key
    return batch


def iter_unit_rows(unit: Unit) -> Iterator[dict]:
    return read_spill(unit.path, unit.skip) if unit.format == "spill" else read_unit(unit)


def process_unit(unit: Unit, plan: SegmentPlan) -> Iterator[list[dict]]:
    """Worker side of a segment: read, apply the previous decision, run map stages, add keys."""
    batch: list[dict] = []
    for row in iter_unit_rows(unit):
        if not row["_stage"] and plan.decision is not None:
            mult, reason, detail = plan.decision.lookup(row["_ord"])
            if mult == 0:
                reject(row, plan.previous, reason, detail)
            else:
                row["_mult"] = mult
        if not row["_stage"]:
            for stage in plan.maps:
                result = stage(row)
                if result:
                    _reject_with_tokens(row, plan, stage.name, result)
                    break
        batch.append(row)
        if len(batch) >= BATCH_DOCS:
            yield _finish_batch(batch, plan)
            batch = []
    if batch:
        yield _finish_batch(batch, plan)


def read_output_docs(unit: Unit) -> Iterator[dict]:
    with open_binary(unit.path) as fh:
        for i, line in enumerate(fh):
            if i >= unit.skip:
                doc = json.loads(line)
                meta = json.dumps(doc["meta"], ensure_ascii=False, sort_keys=True) if "meta" in doc else ""
                yield make_row((unit.index << ORD_SHIFT) + i, doc["id"], doc["source"], doc["text"], doc["lang"],
                               meta, doc.get("repeat", 1))


def pack_unit(unit: Unit, tokenizer: str, append_eos: bool, epoch: int) -> Iterator[list[dict]]:
    """Worker side of packing: tokens of the documents present in this epoch (repeat > epoch)."""
    tok = load_tokenizer_spec(tokenizer)
    batch: list[dict] = []
    for row in read_output_docs(unit):
        tokens = encode_row(tok, row, append_eos) if row["_mult"] > epoch else b""
        batch.append({"source": row["source"], "lang": row["lang"], "tokens": tokens})
        if len(batch) >= BATCH_DOCS:
            yield batch
            batch = []
    if batch:
        yield batch


class _SegmentOutput:
    """Where one segment's rows go: surviving documents (or the spill), rejects, barrier keys."""

    def __init__(self, out_dir: Path, rejects_dir: Path, plan: SegmentPlan, docs_per_shard: int, final: bool):
        self.final = final
        self.docs = ShardedJsonlWriter(out_dir, max_records=docs_per_shard)
        self.rejects = ShardedJsonlWriter(rejects_dir, prefix=f"seg{plan.index}", max_records=1_000_000,
                                          compress=False)
        self.table = KeyTable() if plan.barrier is not None else None

    def close(self) -> None:
        self.docs.close()
        self.rejects.close()


class Runner:
    """Drives one recipe run on an engine (``LocalEngine`` or ``RayEngine``)."""

    def __init__(self, recipe: Recipe, engine, progress=None):
        from .progress import NullProgress

        self.recipe, self.engine = recipe, engine
        self.out = recipe.output
        self.work = self.out / "_work"
        self.progress = progress or NullProgress()
        self.segments = plan_segments(recipe)
        names = [READ] + [s.name for s in recipe.stages if not isinstance(s, Pack)]
        self.accounting = Accounting(names)
        self.summaries: dict[str, dict] = {}
        self.max_repeat = 1
        self.timings: dict[str, float] = {}
        self.damaged: list[str] = []  # one line per damaged input file: its path and what is wrong

    def _fingerprint(self, units: list[Unit]) -> str:
        files = [(u.path, Path(u.path).stat().st_size, Path(u.path).stat().st_mtime_ns) for u in units]
        return f"{self.recipe.fingerprint}:{hashlib.sha256(json.dumps(files).encode()).hexdigest()[:16]}"

    def run(self) -> dict:
        units = expand_inputs(self.recipe.inputs)
        fingerprint = self._fingerprint(units)
        stamp = self.work / "fingerprint"
        if not stamp.exists() or stamp.read_text() != fingerprint:
            # a different recipe or input, or no record of what made tokens/: nothing to resume
            shutil.rmtree(self.work, ignore_errors=True)
            shutil.rmtree(self.out / "tokens", ignore_errors=True)
        self.work.mkdir(parents=True, exist_ok=True)
        stamp.write_text(fingerprint)
        for plan in self.segments:
            units = self._run_segment(plan, units)
        report = {"recipe": self.recipe.name, "engine": self.engine.name, "stages": self.accounting.table(),
                  "decisions": self.summaries, "output_docs": str(self.out / "docs"), "damaged": self.damaged}
        if self.recipe.pack is not None:
            report["pack"] = self._pack(units, self.recipe.pack)
        report["seconds"] = self.timings
        return report

    # -- segments -----------------------------------------------------------------------

    def _run_segment(self, plan: SegmentPlan, units: list[Unit]) -> list[Unit]:
        final = plan.index == len(self.segments) - 1
        seg_dir = self.work / f"seg{plan.index}"
        out_dir = self.out / "docs" if final else seg_dir
        fmt = "docs" if final else "spill"
        if plan.previous:
            plan.decision = self._previous_decision(plan)
        if (seg_dir / "done.json").exists():
            return self._units_from(out_dir, self._restore(seg_dir / "done.json"), fmt)
        for d in (seg_dir, out_dir):
            shutil.rmtree(d, ignore_errors=True)
        for old in (self.out / "rejects").glob(f"seg{plan.index}-*"):
            old.unlink()
        out = _SegmentOutput(out_dir, self.out / "rejects", plan, self.recipe.docs_per_shard, final)
        stage_names = ([plan.previous] if plan.previous else [READ] if plan.index == 0 else []) + \
            [s.name for s in plan.maps] + ([plan.barrier.name + " (keys)"] if plan.barrier else [])
        tracker = self.progress.segment(stage_names, total=sum(u.count for u in units) if plan.index else None)
        start = time.perf_counter()
        for batch in self.engine.map(units, process_unit, plan=plan):
            for row in batch:
                self._route(row, out)
            tracker.update(batch)
        out.close()
        if plan.barrier is not None:
            tracker.message(f"{plan.barrier.name}: deciding on {len(out.table.ords):,} documents")
            decision = plan.barrier.decide(out.table)
            decision.save(seg_dir / "decision.npz")
            self.summaries[plan.barrier.name] = decision.summary
        tracker.close()
        self.timings["+".join(stage_names) or f"segment {plan.index}"] = round(time.perf_counter() - start, 3)
        counts = list(out.docs.counts)
        seg_dir.mkdir(parents=True, exist_ok=True)
        done = {"accounting": self.accounting.state(), "summaries": self.summaries, "timings": self.timings,
                "counts": counts, "max_repeat": self.max_repeat, "damaged": self.damaged}
        (seg_dir / "done.json").write_text(json.dumps(done))
        return self._units_from(out_dir, counts, fmt)

    def _previous_decision(self, plan: SegmentPlan) -> Decision:
        prev_dir = self.work / f"seg{plan.index - 1}"
        prev = json.loads((prev_dir / "done.json").read_text())
        return Decision.load(prev_dir / "decision.npz", prev["summaries"].get(plan.previous, {}))

    def _restore(self, done_path: Path) -> list[int]:
        """Take over a finished segment's bookkeeping; returns its per-shard document counts."""
        done = json.loads(done_path.read_text())
        self.accounting.restore(done["accounting"])
        self.summaries.update(done["summaries"])
        self.timings.update(done["timings"])
        self.max_repeat = done["max_repeat"]
        self.damaged = done.get("damaged", self.damaged)
        return done["counts"]

    def _route(self, row: dict, out: _SegmentOutput) -> None:
        """One row of a segment to where it belongs: the rejects, the barrier's table, the output."""
        if row["_stage"]:
            if row["_reason"] == DAMAGED and row["_stage"] == READ:
                self.damaged.append(row["_detail"])
            self.accounting.rejected(row)
            out.rejects.write(reject_record(row))
            return
        if out.table is not None:
            out.table.add(row)
        if out.final:
            self.accounting.kept(row)
            self.max_repeat = max(self.max_repeat, row["_mult"])
            out.docs.write(output_doc(row))
        else:
            out.docs.write({k: v for k, v in row.items() if k != "_key"})

    @staticmethod
    def _units_from(directory: Path, counts: list[int], fmt: str) -> list[Unit]:
        paths = sorted(directory.glob("part-*.jsonl.zst"))
        return [Unit(index=i, path=str(p), format=fmt, count=n) for i, (p, n) in enumerate(zip(paths, counts))]

    # -- packing ---------------------------------------------------------------------------

    def _pack(self, units: list[Unit], pack: Pack) -> dict:
        tok = load_tokenizer_spec(self.recipe.tokenizer)
        info = {"name": tok.name, "vocab_size": tok.vocab_size, "eos_id": tok.eos_id, "spec": self.recipe.tokenizer}
        shards = ShardWriter(self.out / "tokens", pack.tokens_per_shard, info)
        counts = [u.count for u in units]
        max_repeat = self.max_repeat
        state = shards.state
        progress = dict(state["progress"]) or {"docs_by_lang": {}, "tokens_by_lang": {}, "docs_by_source": {},
                                               "tokens_by_source": {}}
        start = time.perf_counter()
        tracker = self.progress.pack(total=sum(counts) * max_repeat)
        tracker.advance(state["epoch"] * sum(counts) + state["next_doc"])
        for epoch in range(state["epoch"], max_repeat):
            consumed = state["next_doc"] if epoch == state["epoch"] else 0
            todo = self._skip(units, counts, consumed)
            for batch in self.engine.map(todo, pack_unit, schema=TOKENS_SCHEMA, tokenizer=self.recipe.tokenizer,
                                         append_eos=pack.append_eos, epoch=epoch):
                for row in batch:
                    consumed += 1
                    if row["tokens"]:
                        shards.add(row["tokens"])
                        n = len(row["tokens"]) // 4
                        for what, key in (("lang", row["lang"]), ("source", row["source"])):
                            progress[f"docs_by_{what}"][key] = progress[f"docs_by_{what}"].get(key, 0) + 1
                            progress[f"tokens_by_{what}"][key] = progress[f"tokens_by_{what}"].get(key, 0) + n
                        if shards.shard_full():
                            shards.close_shard(epoch, consumed, progress)
                tracker.advance(len(batch))
            shards.close_shard(epoch + 1, 0, progress)
        tracker.close()
        index = shards.finish()
        self.timings["pack"] = round(time.perf_counter() - start, 3)
        return {"dir": str(self.out / "tokens"), "n_tokens": index["n_tokens"], "n_docs": index["n_docs"],
                "n_shards": len(index["shards"]), "epochs": max_repeat, **progress}

    @staticmethod
    def _skip(units: list[Unit], counts: list[int], n: int) -> list[Unit]:
        """The units still to read after the first ``n`` documents."""
        todo = []
        for unit, count in zip(units, counts):
            if n >= count:
                n -= count
                continue
            todo.append(Unit(index=unit.index, path=unit.path, format=unit.format, skip=n, count=count - n))
            n = 0
        return todo
