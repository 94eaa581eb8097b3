"""Progress display: one rich bar per stage, fed by the driver as batches come back."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class NullTracker:
    def update(self, batch: list[dict]) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class NullProgress:
    def segment(self, stage_names: list[str], total: int | None = None) -> NullTracker:
        return NullTracker()

    def pack(self, total: int) -> NullTracker:
        return NullTracker()


class SegmentTracker(NullTracker):
    """Counts, per stage of a segment, the documents that entered it and those it rejected."""

    def __init__(self, progress: Progress, stage_names: list[str], total: int | None):
        self.progress, self.names = progress, stage_names
        self.entered = [0] * len(stage_names)
        self.rejected = [0] * len(stage_names)
        self.tasks = [progress.add_task(name, total=total, info="") for name in stage_names]

    def update(self, batch: list[dict]) -> None:
        last = len(self.names) - 1
        for row in batch:
            stage = row["_stage"]
            upto = self.names.index(stage) if stage in self.names else last
            for i in range(upto + 1):
                self.entered[i] += 1
            if stage:
                self.rejected[upto] += 1
        for task, entered, rejected in zip(self.tasks, self.entered, self.rejected):
            self.progress.update(task, completed=entered, info=f"rejected {rejected:,}" if rejected else "")

    def message(self, text: str) -> None:
        self.progress.console.log(text)

    def close(self) -> None:
        for task, entered in zip(self.tasks, self.entered):
            self.progress.update(task, total=entered, completed=entered)


class PackTracker(NullTracker):
    def __init__(self, progress: Progress, total: int):
        self.progress = progress
        self.task = progress.add_task("pack", total=total, info="documents x repeats")

    def advance(self, n: int) -> None:
        self.progress.advance(self.task, n)


class RichProgress:
    def __init__(self, console: Console | None = None):
        self.bar = Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console)

    def __enter__(self) -> RichProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.stop()

    def segment(self, stage_names: list[str], total: int | None = None) -> SegmentTracker:
        return SegmentTracker(self.bar, stage_names, total)

    def pack(self, total: int) -> PackTracker:
        return PackTracker(self.bar, total)
