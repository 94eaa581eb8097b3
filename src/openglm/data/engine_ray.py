"""The Ray Data engine: each input unit is a task; rows come back to the driver in input order.

The per-document work (normalising, filtering, language ID, MinHash signatures, tokenizing) runs in
Ray workers; the driver keeps the order-dependent bookkeeping (accounting, spill writing, barrier
decisions, shard writing), which is what makes the output identical to the local engine's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from .readers import Unit
from .records import ROW_SCHEMA


class RayEngine:
    name = "ray"

    def __init__(self, num_cpus: int | None = None, address: str | None = None):
        import ray

        self._owns_ray = not ray.is_initialized()  # a cluster the caller started is left running
        if self._owns_ray:
            ray.init(address=address, num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # rows must reach the driver in input order
        ctx.enable_progress_bars = False  # ours are per stage

    def map(self, units: list[Unit], fn: Callable[..., Iterator[list[dict]]], schema=ROW_SCHEMA,
            **kwargs) -> Iterator[list[dict]]:
        import pyarrow as pa
        import ray

        if not units:
            return
        ds = ray.data.from_items([{"unit": i} for i in range(len(units))], override_num_blocks=len(units))

        def run_units(batch):
            for i in batch["unit"]:
                for rows in fn(units[int(i)], **kwargs):
                    yield pa.Table.from_pylist(rows, schema=schema)

        for table in ds.map_batches(run_units, batch_size=1, batch_format="numpy").iter_batches(
                batch_format="pyarrow", batch_size=None):
            yield table.to_pylist()

    def close(self) -> None:
        import ray

        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
