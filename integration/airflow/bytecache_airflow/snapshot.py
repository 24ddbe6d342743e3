"""What a byte-bounded DAG bag holds and has done, as plain values (``ByteBoundedDagBag.snapshot()``).

Profiling and sizing code reads a bag only through this record, never through the bag's private
fields, so the bag's internals can change without breaking them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["CachedDag", "BagSnapshot"]


@dataclass(frozen=True)
class CachedDag:
    dag_version_id: str
    dag_id: str
    weight: int  # bytes charged to the budget
    json_bytes: int  # serialized JSON length it was weighed from


@dataclass(frozen=True)
class BagSnapshot:
    max_bytes: int | None
    cached_bytes: int  # == sum(e.weight for e in entries)
    uncollected_bytes: int  # evicted but not yet collected (estimate)
    entries: tuple[CachedDag, ...]
    hits: int
    misses: int
    loads: int
    rejections: int
    evictions: int
    weighing: dict = field(default_factory=dict)  # the weighing model's state, JSON-able
    # collections, collection_seconds, pauses_ms, trims, trim_seconds, calibration_seconds,
    # maintenance_seconds (and derived figures), JSON-able
    reclaim: dict = field(default_factory=dict)
    # the DAG versions read within the scheduler's last sweep, cached or not (bytecache.workingset)
    working_set_bytes: int = 0
    working_set_entries: int = 0
    working_set_window: float | None = None  # seconds; None until a version was read twice
    superseded: int = 0  # versions dropped because their DAG's runs resolved to a newer one

    def to_dict(self) -> dict:
        return asdict(self)
