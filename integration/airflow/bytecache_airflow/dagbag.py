"""A byte-bounded drop-in for the scheduler's DAG bag (Airflow 3.3's ``CachedDBDagBag``, 3.1/3.2's ``DBDagBag``).

The base class and the stats client come from :mod:`bytecache_airflow.versions`; the behaviour
below is the same on every supported release. Kept from Airflow 3.3's bag (``airflow/models/dagbag.py``):

* entries are keyed by ``dag_version_id`` and hold the deserialized DAG with its ``dag_hash``;
* an entry validated within ``[core] min_serialized_dag_update_interval`` is served without a
  DB round trip; past that window its ``dag_hash`` is compared with the DB and a version
  rewritten in place is dropped and reloaded;
* concurrent misses on one version load it once (``ByteCache.get_or_load`` single flight);
* ``iter_all_latest_version_dags`` bypasses the cache, ``get_serialized_dag_model`` reads the
  DB, ``clear_cache()`` returns the number of entries dropped;
* ``cache_hit`` / ``cache_miss`` / ``cache_clear`` / ``cache_size`` metrics under the prefix.

What changes: the cache is a :class:`bytecache.ByteCache` bounded in bytes. An entry weighs
what a linear model predicts from the DAG's features -- a fixed cost, the length of its
serialized JSON (uncompressed, also when ``[core] compress_serialized_dags`` is on) and its
tasks by operator type (:mod:`bytecache_airflow.weighing`) -- fitted by a
:class:`bytecache.measure.Calibrator` on sampled deep measurements of DAGs the scheduler has
used; the maintenance thread re-weighs cached DAGs when the model is refitted or a DAG grew in
place (``_reweigh_cached``). Evicted DAGs are cyclic garbage; their bytes are tracked until a full collection and
reclaimed by :class:`~bytecache_airflow.reclaim.Reclaimer`, from the maintenance thread only;
with ``gc_freeze`` its collections also freeze the survivors
(:mod:`bytecache_airflow.freezing`), so Python's automatic collections stop walking the cached DAGs.

The cache's own cost (``overhead_seconds``) adds two kinds of time: its collections by wall time
(a collection holds the GIL, so its whole length is lost to every thread), and the rest --
maintenance, calibration, heap trims -- by the CPU time of the thread that ran it
(``time.thread_time``): on a loaded machine their wall time is mostly waiting for the GIL or a
core, time the scheduler spends running, not waiting for the cache.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from uuid import UUID

from sqlalchemy import Text, cast, func, select

from bytecache import ByteCache, EvictionCause, forksafe, format_size
from bytecache.measure import Calibrator
from bytecache.workingset import WorkingSet

from bytecache_airflow.freezing import HeapFreezer
from bytecache_airflow.reclaim import Reclaimer, resident_pause_prior_ms
from bytecache_airflow.settings import DEFAULT_MAX_BYTES, DEFAULT_POLICY
from bytecache_airflow.snapshot import BagSnapshot, CachedDag
from bytecache_airflow.weighing import (
    EXPANDED_FEATURE,
    coverage_keys,
    dag_calibrator,
    dag_features,
    expanded_tasks,
    first_task_expanded,
)
from bytecache_airflow.versions import current as _release_line

_RELEASE = _release_line()  # UnsupportedAirflow on a release line we do not attach to
stats = _RELEASE.stats()
deserialize_dag = _RELEASE.deserialize_dag

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from airflow.models.dagrun import DagRun
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.serialization.definitions.dag import SerializedDAG

__all__ = ["ByteBoundedDagBag", "BagSnapshot", "CachedDag", "serialized_size"]

log = logging.getLogger(__name__)

#: Functions of Airflow's scheduler during which the cache never starts a collection: the
#: critical section holds the pool rows locked (other schedulers' NOWAIT attempts fail and skip
#: queueing), and a collection holds the GIL, stalling the scheduler wherever it is.
SCHEDULER_CRITICAL_SECTIONS = frozenset({"_critical_section_enqueue_task_instances"})
#: Budget assumed for the reclaim trigger when there is no byte cap.
_UNCAPPED_RECLAIM_FLOOR = 64 * 1024**2


class _Entry:
    """A cached DAG; attribute names match Airflow's ``_CacheEntry`` (dag, dag_hash, last_validated).

    Mutable so that revalidation updates ``last_validated`` in place instead of storing a new
    value (a replacement would look like an eviction to the accounting)."""

    __slots__ = ("dag", "dag_hash", "last_validated", "serialized_bytes", "weight", "features", "used", "freeze_epoch")

    def __init__(self, dag: SerializedDAG, dag_hash: str, last_validated: float, serialized_bytes: int) -> None:
        self.dag = dag
        self.dag_hash = dag_hash
        self.last_validated = last_validated
        self.serialized_bytes = serialized_bytes
        self.weight = 0
        self.features: dict[str, float] = {}  # what ``weight`` was predicted from
        self.used = False  # served from the cache at least once (only such DAGs are sampled)
        self.freeze_epoch = 0  # the heap freezer's epoch at load: frozen once the epoch moves on

    def __repr__(self) -> str:
        return f"_Entry(dag_id={getattr(self.dag, 'dag_id', None)!r}, serialized_bytes={self.serialized_bytes}, weight={self.weight})"


class _NotFound(Exception):
    """The version (or its serialized DAG) is not in the DB: return None, cache nothing."""


def _version_key(version_id: UUID | str) -> UUID:
    """One cache key per version, whichever form the caller has."""
    return UUID(version_id) if isinstance(version_id, str) else version_id


def _entry_weight(entry: _Entry) -> int:
    return entry.weight


def serialized_size(serdag: SerializedDagModel) -> int:
    """Length of the stored JSON of ``serdag``; uncompressed length when it is stored compressed."""
    if serdag._data_compressed:
        return len(zlib.decompress(serdag._data_compressed))
    return _json_length(serdag._data)


def _json_length(data: object) -> int:
    # The length the DB reports for the JSON column (SQLAlchemy's JSON type writes json.dumps'
    # default form). Only for a row read without that length; it costs a dump of the document.
    if isinstance(data, str):
        return len(data)
    return len(json.dumps(data)) if data else 0


def _stored_dag_columns():
    """What a load reads: data, compressed data, hash and the JSON length, in one round trip."""
    from airflow.models.serialized_dag import SerializedDagModel

    return (
        SerializedDagModel._data,
        SerializedDagModel._data_compressed,
        SerializedDagModel.dag_hash,
        func.length(cast(SerializedDagModel._data, Text)),
    )


class ByteBoundedDagBag(_RELEASE.bag_base()):
    """Airflow's DB-backed DAG bag with a byte-bounded, TTL-expiring, scan-resistant cache."""

    def __init__(
        self,
        load_op_links: bool = True,
        *,
        max_bytes: int | str | None = DEFAULT_MAX_BYTES,
        ttl: float | None = None,
        policy: str = DEFAULT_POLICY,
        stats_prefix: str,
        timer: Callable[[], float] = time.monotonic,
        cpu_timer: Callable[[], float] = time.thread_time,
        calibrator: Calibrator | None = None,
        revalidation_interval: float | None = None,
        maintenance_interval: float = 0.25,
        reclaim_soft_fraction: float = 0.1,
        reclaim_hard_fraction: float = 0.2,
        reclaim_min_interval: float = 30.0,
        reclaim_hard_min_interval: float = 10.0,
        reclaim_max_time_share: float = 0.01,
        reclaim_first_pause_ms: Callable[[], float] = resident_pause_prior_ms,
        gc_freeze: bool = False,
        refreeze_max_age: float = 300.0,
        critical_sections: frozenset[str] = SCHEDULER_CRITICAL_SECTIONS,
        background: bool = True,
    ) -> None:
        super().__init__(load_op_links=load_op_links, cache_size=0, cache_ttl=0, stats_prefix=stats_prefix)
        if revalidation_interval is not None:
            self._revalidation_interval = revalidation_interval
        self._timer = timer
        self._cpu_timer = cpu_timer  # the CPU time of the calling thread: what maintenance costs
        # getsizeof: an entry carries its own weight (re-weighed in place by the maintenance step)
        self._cache = ByteCache(
            max_bytes if max_bytes else None, ttl=ttl or None, timer=timer, policy=policy, on_evict=self._on_evict,
            getsizeof=_entry_weight,
        )
        # Airflow code that peeks at ``_dags`` (len, membership, ``[key].dag``) keeps working.
        self._dags = self._cache  # type: ignore[assignment]
        self.calibrator = calibrator if calibrator is not None else dag_calibrator()
        self.maintenance_interval = maintenance_interval
        # What the budget would need: every version read within the last sweep, evicted or not.
        # Versions idle past the TTL have left the cache too; a sweep slower than that cannot be served.
        self.working_set = WorkingSet(min_keep=self._cache.ttl or 3600.0)
        self.reclaimer = Reclaimer(
            self._reclaim_budget,
            soft_fraction=reclaim_soft_fraction,
            hard_fraction=reclaim_hard_fraction,
            min_interval=reclaim_min_interval,
            hard_min_interval=reclaim_hard_min_interval,
            max_time_share=reclaim_max_time_share,
            first_pause_ms=reclaim_first_pause_ms,
            timer=timer,
            on_collect=self._on_collect,
            on_trim=self._on_trim,
            freezer=HeapFreezer(max_age=refreeze_max_age, timer=timer) if gc_freeze else None,
            cpu_timer=cpu_timer,
        )
        self.critical_sections = frozenset(critical_sections)
        self.deferred_for_critical_section = 0
        # DAGs picked for a deep measurement as they left the cache, measured by the maintenance
        # step (off the lookup path); held only until then.
        self._queued_samples: list[tuple[Any, int]] = []
        self._weighed_with_samples = 0  # the calibrator's sample count the cached weights reflect
        self._last_maintenance = self._created = timer()
        self.maintenance_seconds = 0.0  # thread CPU time in maintain(), besides collections, trims and calibration
        self.calibration_seconds = 0.0  # thread CPU time measuring samples
        self._overhead_sent_ms = 0
        self._sent_gauges: dict[str, int] = {}
        # Every gauge is re-sent this often even if unchanged: a backend configured after the
        # bag was built (the scheduler initializes its stats client later) still gets them all.
        self.gauge_resend_interval = 30.0
        self._last_full_send = timer()
        self._maintaining = threading.Lock()
        self._samples_lock = threading.Lock()
        # dag_id -> the version its runs without a bundle version last resolved to (its latest)
        self._latest_versions: dict[str, UUID] = {}
        self.superseded_dropped = 0  # cached versions dropped because a run moved to a newer one
        # A forked child (LocalExecutor forks the scheduler) gets these free, and Airflow's bag
        # lock; the cache, calibrator, working set and reclaimer guard their own.
        forksafe.register(self, "_maintaining", "_samples_lock", "_lock", after_in_child=ByteBoundedDagBag._after_fork_in_child)
        # The maintenance thread starts with the first lookup's housekeeping, not here: the
        # scheduler builds its bag before its executor starts, and LocalExecutor forks all its
        # workers at start. Later forks stop the thread first (_Maintainer).
        self._background = background
        self._registered = False

    # -- properties ------------------------------------------------------------------------
    @property
    def cache(self) -> ByteCache:
        return self._cache

    @property
    def max_bytes(self) -> int | None:
        return self._cache.maxsize

    @property
    def ttl(self) -> float | None:
        return self._cache.ttl

    @property
    def policy(self) -> str:
        return self._cache.policy

    @property
    def currsize(self) -> int:
        return self._cache.currsize

    @property
    def uncollected_bytes(self) -> int:
        return self.reclaimer.refresh()

    def snapshot(self) -> BagSnapshot:
        """What the bag holds and has done, as plain values (the one API profiling reads)."""
        entries = tuple(  # one consistent copy: cached_bytes below is the sum of these weights
            CachedDag(str(key), getattr(entry.dag, "dag_id", ""), weight, entry.serialized_bytes)
            for key, entry, weight in self._cache.weighed_items()
        )
        s = self._cache.stats()
        working_set = self.working_set.estimate(self._timer())
        return BagSnapshot(
            max_bytes=s.maxsize,
            cached_bytes=sum(e.weight for e in entries),
            uncollected_bytes=self.reclaimer.refresh(),
            entries=entries,
            hits=s.hits,
            misses=s.misses,
            loads=s.loads,
            rejections=s.rejections,
            evictions=s.evictions_size + s.evictions_expired,
            superseded=self.superseded_dropped,
            weighing=self.weighing_state(),
            reclaim=self.reclaim_state(),
            working_set_bytes=working_set.bytes,
            working_set_entries=working_set.entries,
            working_set_window=working_set.window,
        )

    def weighing_state(self) -> dict:
        return self.calibrator.state()

    def overhead_seconds(self) -> float:
        rc = self.reclaimer
        return rc.total_ms / 1000.0 + rc.trim_cpu_seconds + self.calibration_seconds + self.maintenance_seconds

    def reclaim_state(self) -> dict:
        rc = self.reclaimer
        state = rc.state()
        state["calibration_seconds"] = self.calibration_seconds
        state["overhead_clocks"] = "collections: wall time; trims, calibration, maintenance: thread CPU time"
        state["maintenance_seconds"] = self.maintenance_seconds
        state["elapsed_seconds"] = self._timer() - self._created
        state["deferred_for_critical_section"] = self.deferred_for_critical_section
        overhead = self.overhead_seconds()
        state["overhead_seconds"] = overhead
        state["overhead_share"] = overhead / state["elapsed_seconds"] if state["elapsed_seconds"] > 0 else 0.0
        return state

    def describe(self) -> str:
        budget = "no byte cap" if self.max_bytes is None else format_size(self.max_bytes)
        return f"budget={budget}, ttl={'off' if self.ttl is None else f'{self.ttl:g}s'}, policy={self.policy}"

    # -- loading ---------------------------------------------------------------------------
    def _weigh(self, entry: _Entry) -> int:
        """Bytes to charge for a DAG just deserialized, by the fitted model (set on the entry).

        No deep measurement here (it costs about a deserialization): the maintenance thread
        measures samples of DAGs the scheduler has used (``_first_hit``, ``_on_evict``) -- the
        DAGs as the scheduler holds them are what the budget bounds -- and re-weighs cached
        entries as the model or the DAGs change (``_reweigh_cached``)."""
        entry.features = dag_features(entry.dag, entry.serialized_bytes, expanded=0)
        entry.weight = self.calibrator.weight(entry.features)
        return entry.weight

    def _load(self, version_id: UUID | str, session: Session) -> _Entry:
        from airflow.models.serialized_dag import SerializedDagModel

        # Stamped before the read: a rewrite that lands after the SELECT is caught by the first
        # revalidation, never covered by a window that started after it.
        validated = self._timer()
        start = time.perf_counter()
        # Columns, not the ORM entity: an instance already in the session keeps its decoded data
        # cache (``SerializedDagModel.data``) even under ``populate_existing``, which refreshes only
        # the columns -- a row rewritten in place would be cached as the old DAG with the new hash.
        row = session.execute(
            select(*_stored_dag_columns()).where(SerializedDagModel.dag_version_id == version_id)
        ).first()
        if row is None:
            raise _NotFound
        entry = self._entry_from_row(*row, validated=validated)
        stats.timing(f"{self._stats_prefix}.cache_load", (time.perf_counter() - start) * 1000.0)
        self._weigh(entry)  # deep sampling is not load time
        return entry

    def _entry_from_row(
        self, data: object, compressed: bytes | None, dag_hash: str, json_length: int | None, *, validated: float
    ) -> _Entry:
        """Decode and deserialize a stored DAG, decompressing it once; weigh it from its JSON length."""
        if compressed:
            raw = zlib.decompress(compressed)
            size, data = len(raw), json.loads(raw)
        else:
            if isinstance(data, str):
                data = json.loads(data)
            size = int(json_length) if json_length else _json_length(data)
        if not isinstance(data, dict):
            raise _NotFound
        freezer = self.reclaimer.freezer
        # read before deserializing: a freeze while the DAG is built freezes part of it, and the
        # entry must then count as frozen (only our collection frees it), not as unfrozen
        epoch = freezer.epoch if freezer is not None else 0
        dag = deserialize_dag(data, self.load_op_links)
        if not dag:
            raise _NotFound
        entry = _Entry(dag, dag_hash, validated, size)
        entry.freeze_epoch = epoch
        return entry

    def _weight_or_reject(self, entry: _Entry) -> int:
        maxsize = self._cache.maxsize
        if maxsize is not None and entry.weight > maxsize:
            stats.incr(f"{self._stats_prefix}.cache_rejections")
        return entry.weight

    def _lookup(self, version_id: UUID | str, session: Session) -> tuple[_Entry | None, bool]:
        """(entry or None, whether this call loaded it)."""
        loaded = False

        def loader() -> _Entry:
            nonlocal loaded
            loaded = True
            return self._load(version_id, session)

        try:
            entry = self._cache.get_or_load(version_id, loader, weight=self._weight_or_reject)
        except _NotFound:
            return None, True
        return entry, loaded

    def get_dag_for_run(self, dag_run: DagRun, session: Session) -> SerializedDAG | None:
        """Airflow's read (the version the run resolves to, each release line's own rule), with
        one addition: a run without a bundle version of its own resolves to its DAG's latest
        version, so once one such run resolves to a new version, the DAG's previous version is
        one no run of it reads again -- it leaves the cache before the new one is loaded, so the
        new one takes its room instead of a live entry's, rather than waiting for the TTL (an
        hour by default) or for the policy to find it cold. A run pinned to a bundle version
        (versioned bundles) supersedes nothing: older runs may still read older versions."""
        resolved = self._version_from_dag_run(dag_run=dag_run, session=session)
        if not resolved:
            return None
        version_id = _version_key(getattr(resolved, "id", resolved))  # 3.1 resolves to a DagVersion, 3.2+ to its id
        if not dag_run.bundle_version:
            self._supersede(dag_run.dag_id, version_id)
        return self._get_dag(version_id=version_id, session=session)

    def _supersede(self, dag_id: str, version_id: UUID) -> None:
        previous = self._latest_versions.get(dag_id)
        if previous == version_id:
            return
        self._latest_versions[dag_id] = version_id
        if previous is not None and self._cache.pop(previous, None) is not None:
            self.superseded_dropped += 1
            stats.incr(f"{self._stats_prefix}.cache_evictions_superseded")

    def _get_dag(self, version_id: UUID | str, session: Session) -> SerializedDAG | None:
        version_id = _version_key(version_id)
        entry, loaded = self._lookup(version_id, session)
        now = self._timer()
        if entry is not None and not loaded:
            if not entry.used:
                self._first_hit(entry)
            self.working_set.touch(version_id, now)
            if now - entry.last_validated < self._revalidation_interval:
                self._on_cache_hit()
                self._maybe_maintain(now)
                return entry.dag
            # Past the window: the version may have been rewritten in place (same id, new hash).
            if self._current_dag_hash(version_id, session) == entry.dag_hash:
                entry.last_validated = now
                self._on_cache_hit()
                self._maybe_maintain(now)
                return entry.dag
            with self._lock:
                if self._cache.peek(version_id) is entry:
                    self._cache.pop(version_id, None)
            entry, _ = self._lookup(version_id, session)
        if entry is None:
            return None  # not in the DB: no miss, as in Airflow's bag (nothing was cached or loaded)
        self.working_set.record(version_id, entry.weight, now)
        self.reclaimer.observe(self._cache.currsize)  # a load is when live + uncollected peaks
        self._on_cache_miss()
        self._maybe_maintain(now, loaded=True)
        return entry.dag

    def _read_dag(self, serdag: SerializedDagModel) -> SerializedDAG | None:
        """Deserialize ``serdag`` and cache it (Airflow's hook; our own reads go through columns)."""
        try:
            entry = self._entry_from_row(
                serdag._data, serdag._data_compressed, serdag.dag_hash, None, validated=self._timer()
            )
        except _NotFound:
            return None
        return self._store(serdag.dag_version_id, entry)

    def get_latest_version_of_dag(self, dag_id: str, *, session: Session) -> SerializedDAG | None:
        """The latest version of ``dag_id``, read (always, as Airflow does) in one round trip, and cached."""
        from airflow.models.serialized_dag import SerializedDagModel

        validated = self._timer()
        query = SerializedDagModel.latest_item_select_object(dag_id).with_only_columns(
            SerializedDagModel.dag_version_id, *_stored_dag_columns(), maintain_column_froms=True
        )
        row = session.execute(query).first()
        if row is None:
            return None
        version_id, *stored = row
        try:
            entry = self._entry_from_row(*stored, validated=validated)
        except _NotFound:
            return None
        return self._store(version_id, entry)

    def _store(self, version_id: UUID | str, entry: _Entry) -> SerializedDAG:
        self._weigh(entry)
        try:
            self._cache.set(version_id, entry, weight=self._weight_or_reject(entry))
        except ValueError:
            pass  # heavier than the whole budget: served uncached
        self._maybe_maintain(self._timer(), loaded=True)
        return entry.dag

    def clear_cache(self) -> int:
        with self._lock:
            count = len(self._cache)
            self._cache.clear()
        self._on_cache_clear()
        self.maintain(force=True)
        return count

    # -- accounting ------------------------------------------------------------------------
    def _on_evict(self, key: Any, value: _Entry, weight: int, cause: EvictionCause) -> None:
        # Every removal drops the only reference the cache had to a cyclic object graph.
        self.reclaimer.add(weight, freeze_epoch=value.freeze_epoch)
        if cause is EvictionCause.SIZE:
            stats.incr(f"{self._stats_prefix}.cache_evictions_size")
        elif cause is EvictionCause.EXPIRED:
            stats.incr(f"{self._stats_prefix}.cache_evictions_expired")
        else:
            return  # replaced or deleted: not what the budget has to bound
        if not value.used:
            return  # evicted before any hit: as fresh as at load, not what a cached DAG weighs
        if self.calibrator.seen >= self.calibrator.warmup:
            features = value.features  # as of the last maintenance step: no pass over the tasks here
            if self.calibrator.should_sample(features, coverage_keys(features)):
                self._queue_sample(value)

    def _unfrozen_cached_bytes(self) -> int:
        freezer = self.reclaimer.freezer
        if freezer is None:
            return 0
        return sum(weight for _, entry, weight in self._cache.weighed_items() if entry.freeze_epoch >= freezer.epoch)

    def _first_hit(self, entry: _Entry) -> None:
        # The warm-up: the first few DAGs to be served a second time are sampled (once the
        # scheduler has worked with them), so the model fits used DAGs before any eviction.
        entry.used = True
        if self.calibrator.seen < self.calibrator.warmup and self.calibrator.should_sample():
            self._queue_sample(entry)

    def _queue_sample(self, entry: _Entry) -> None:
        with self._samples_lock:
            self._queued_samples.append((entry.dag, entry.serialized_bytes))

    def _measure_queued_samples(self) -> None:
        with self._samples_lock:
            queued, self._queued_samples = self._queued_samples, []
        if not queued:
            return
        started = self._cpu_timer()
        try:
            self._measure(queued)
        finally:
            self.calibration_seconds += self._cpu_timer() - started

    def _measure(self, queued: list[tuple[Any, int]]) -> None:
        for dag, json_bytes in queued:
            features = dag_features(dag, json_bytes)  # counted now: the DAG as it is measured
            self.calibrator.measure_and_record(dag, features, coverage_keys(features))

    def _reweigh_cached(self) -> int:
        """Re-weigh the cached DAGs whose weight is out of date; returns how many changed.

        Two things date a weight: the model was refitted since (new samples), or the DAG grew in
        place -- the scheduler's ``verify_integrity`` caches a count on every task of a run's DAG
        (``weighing.expanded_tasks``), ~30% more memory. Without this, entries keep the weight
        of the model and the DAG at load, and the gauge drifts from what the cache holds (by
        +13-15% in the soak's smoke test, where the samples are of grown DAGs and the cache at
        exit holds some fresh ones). Runs on the maintenance thread; the check per entry is one
        task's referents, the count a pass over its tasks once it has grown."""
        refitted = self.calibrator.samples != self._weighed_with_samples
        self._weighed_with_samples = self.calibrator.samples
        changed = 0
        for key, entry, _ in self._cache.weighed_items():  # a copy: lookups go on meanwhile
            grown = not entry.features.get(EXPANDED_FEATURE) and first_task_expanded(entry.dag)
            if grown:
                entry.features = {**entry.features, EXPANDED_FEATURE: float(expanded_tasks(entry.dag))}
            if not (grown or refitted):
                continue
            weight = self.calibrator.weight(entry.features)
            if weight != entry.weight:
                entry.weight = weight
                try:
                    self._cache.reweigh(key)  # the entry's own weight, whatever value is there now
                except KeyError:
                    continue  # evicted meanwhile
                changed += 1
        return changed

    def _after_fork_in_child(self) -> None:
        self._queued_samples = []  # the parent measures them; the child need not hold the DAGs
        self._registered = False  # the parent's maintenance thread is not here: the next lookup starts one

    def _reclaim_budget(self) -> int:
        maxsize = self._cache.maxsize
        if maxsize is not None:
            return maxsize
        return max(self._cache.currsize, _UNCAPPED_RECLAIM_FLOOR)

    def _on_collect(self, ms: float, freed_estimate: int) -> None:
        stats.incr(f"{self._stats_prefix}.cache_reclaims")
        stats.timing(f"{self._stats_prefix}.cache_reclaim_duration", ms)
        log.debug("bytecache: gc.collect() took %.1f ms to reclaim ~%s of evicted DAGs", ms, format_size(freed_estimate))

    def _on_trim(self, ms: float) -> None:
        stats.timing(f"{self._stats_prefix}.cache_trim_duration", ms)

    def _on_cache_size(self, *, rate: float = 1.0) -> None:
        self._maybe_maintain(self._timer())

    # -- maintenance: expiry and gauges (rate-limited, never per hit); reclaim (never on a lookup) --
    def _start_maintenance_thread(self) -> None:
        # Started by the first lookup or maintenance, not by the constructor: the scheduler builds
        # its bag before LocalExecutor forks its workers.
        if self._background and not self._registered:
            self._registered = True
            _Maintainer.register(self)

    def _maybe_maintain(self, now: float, *, loaded: bool = False) -> None:
        self._start_maintenance_thread()  # on every release line, whether or not housekeeping is due
        if now - self._last_maintenance >= self.maintenance_interval:
            self.maintain(now=now, reclaim=False)

    @contextlib.contextmanager
    def maintenance_paused(self, timeout: float = -1) -> Iterator[bool]:
        """Hold off the bag's own housekeeping (collections, trims, calibration, re-weighing) for
        the ``with`` block, for measurements that must not be disturbed. Waits up to ``timeout``
        seconds (-1: as long as it takes) for a running step to end; yields whether it got the
        pause, and runs the block either way."""
        paused = self._maintaining.acquire(timeout=timeout)
        try:
            yield paused
        finally:
            if paused:
                self._maintaining.release()

    def maintain(self, *, now: float | None = None, force: bool = False, reclaim: bool = True) -> None:
        """Drop expired entries and send changed gauges (at most every ``maintenance_interval``
        seconds, unless ``force``: then every gauge now); with ``reclaim``, also take the
        deep-size samples queued by evictions, reclaim evicted memory if due and return freed
        heap to the OS after a full collection.

        Lookups call it without ``reclaim`` (at most every ``maintenance_interval`` seconds of the
        bag's timer); the daemon thread calls it with ``reclaim`` once a second, so nothing that
        pauses the process runs on a lookup, and gauges and TTL expiry stay current while the
        scheduler is idle.
        """
        if not self._maintaining.acquire(blocking=force):
            return  # another thread is on it
        started = self._cpu_timer()
        counted_apart = 0.0  # collections, trims and calibration are counted on their own
        try:
            now = self._timer() if now is None else now
            housekeeping = force or now - self._last_maintenance >= self.maintenance_interval
            if housekeeping:
                self._last_maintenance = now
                self._start_maintenance_thread()
                if self._cache.ttl is not None:
                    self._cache.expire()
            if reclaim:
                counted_apart = self._reclaim_step()
            if housekeeping:  # after the reclaim step: the gauges show what it did
                if now - self._last_full_send >= self.gauge_resend_interval:
                    force = True
                if force:
                    self._last_full_send = now
                self.flush_gauges(force=force)
                self._send_overhead()
        finally:
            self.maintenance_seconds += max(0.0, self._cpu_timer() - started - counted_apart)
            self._maintaining.release()

    def _reclaim_step(self) -> float:
        """Calibrate on queued samples, collect and trim if due; the thread CPU seconds that took,
        which maintenance does not count again (calibration and trims are counted by that CPU
        time, collections by their wall time)."""
        rc = self.reclaimer
        apart_before = self.calibration_seconds + rc.collection_cpu_seconds + rc.trim_cpu_seconds
        self._measure_queued_samples()
        self._reweigh_cached()
        rc.observe(self._cache.currsize, tick=True)
        rc.unfrozen_live = self._unfrozen_cached_bytes()
        if rc.wanted():
            if self._in_critical_section():
                self.deferred_for_critical_section += 1
            else:
                rc.maybe_collect()
        rc.maybe_follow()
        rc.maybe_trim()
        return self.calibration_seconds + rc.collection_cpu_seconds + rc.trim_cpu_seconds - apart_before

    def _in_critical_section(self) -> bool:
        """Whether any thread is inside one of ``critical_sections`` (a collection started now
        would stall it there: the GIL is held for the whole collection)."""
        names = self.critical_sections
        if not names:
            return False
        for frame in sys._current_frames().values():
            while frame is not None:
                if frame.f_code.co_name in names:
                    return True
                frame = frame.f_back
        return False

    def gauges(self) -> dict[str, int]:
        s = self._cache.stats()
        working_set = self.working_set.estimate(self._timer())
        return {
            "cache_size": s.entries,
            "cache_bytes": s.currsize,
            "cache_max_bytes": s.maxsize or 0,
            "cache_uncollected_bytes": self.reclaimer.refresh(),
            "cache_working_set_bytes": working_set.bytes,
            "cache_working_set_entries": working_set.entries,
            **self.reclaimer.pause_gauges(),
        }

    def _send_overhead(self) -> None:
        # A counter of the cache's own time (collections, trims, calibration, maintenance) in ms:
        # its rate over wall time is the cache's overhead share.
        total_ms = int(self.overhead_seconds() * 1000.0)
        if total_ms > self._overhead_sent_ms:
            stats.incr(f"{self._stats_prefix}.cache_overhead_ms", total_ms - self._overhead_sent_ms)
            self._overhead_sent_ms = total_ms

    def flush_gauges(self, *, force: bool = False) -> dict[str, int]:
        """Send the gauges whose values changed since they were last sent (all if ``force``)."""
        sent = {}
        for name, value in self.gauges().items():
            if force or self._sent_gauges.get(name) != value:
                stats.gauge(f"{self._stats_prefix}.{name}", value)
                self._sent_gauges[name] = value
                sent[name] = value
        return sent


class _Maintainer:
    """One daemon thread per process that maintains every live bag once a second.

    Not running at a fork: a fork stops it first and the parent starts it again after, so the
    child gets no lock it holds, and Python 3.12+ does not count it when it warns about forking
    a multi-threaded process. The fork waits for a maintenance step under way to end (a
    collection holds the GIL anyway) and for the OS thread to be gone -- ``join()`` returns
    a moment before it is, and the warning counts OS threads -- at most ``fork_wait_limit``
    seconds; past that it forks anyway (the locks are still reset in the child)."""

    interval = 1.0
    fork_wait_limit = 0.5
    _bags: weakref.WeakSet[ByteBoundedDagBag] = weakref.WeakSet()
    _lock = threading.Lock()
    _thread: threading.Thread | None = None
    _stop = threading.Event()
    _stopped_for_fork = False
    #: fork waits in this process: count, last and longest in seconds, and forks the thread
    #: outlived (the limit ran out)
    fork_waits = 0
    last_fork_wait = 0.0
    max_fork_wait = 0.0
    forks_with_thread = 0

    @classmethod
    def register(cls, bag: ByteBoundedDagBag) -> None:
        with cls._lock:
            cls._bags.add(bag)
            if cls._thread is None or not cls._thread.is_alive():
                cls._start_locked()

    @classmethod
    def _start_locked(cls) -> None:
        cls._stop = threading.Event()
        cls._thread = threading.Thread(target=cls._run, args=(cls._stop,), name="bytecache-dagbag-maintenance", daemon=True)
        cls._thread.start()

    @classmethod
    def _run(cls, stop: threading.Event) -> None:
        while not stop.wait(cls.interval):
            for bag in list(cls._bags):
                if stop.is_set():
                    return  # a fork is waiting
                try:
                    bag.maintain()
                except Exception:  # never let maintenance kill the thread
                    log.exception("bytecache: DAG bag maintenance failed")

    @classmethod
    def stop_for_fork(cls) -> None:
        started = time.monotonic()
        if not cls._lock.acquire(timeout=cls.fork_wait_limit):
            return  # held by a thread that waits on this one: fork as things are
        try:
            thread = cls._thread
            if thread is None or thread is threading.current_thread() or not thread.is_alive():
                return
            cls._stop.set()
            cls._thread = None
            cls._stopped_for_fork = True
        finally:
            cls._lock.release()
        deadline = started + cls.fork_wait_limit
        thread.join(cls.fork_wait_limit)
        task = f"/proc/self/task/{thread.native_id}"
        while os.path.exists(task) and time.monotonic() < deadline:
            time.sleep(0.0001)  # the OS thread ends right after join() returns
        waited = time.monotonic() - started
        cls.fork_waits += 1
        cls.last_fork_wait = waited
        cls.max_fork_wait = max(cls.max_fork_wait, waited)
        if thread.is_alive() or os.path.exists(task):
            cls.forks_with_thread += 1

    @classmethod
    def restart_after_fork(cls) -> None:
        with cls._lock:
            if cls._stopped_for_fork:
                cls._stopped_for_fork = False
                if cls._bags:
                    cls._start_locked()

    @classmethod
    def forget_after_fork(cls) -> None:
        """In the child: the parent's thread maintains the parent's bags; a bag the child uses
        starts the child's own thread at its next lookup."""
        cls._thread = None
        cls._stopped_for_fork = False
        cls._bags = weakref.WeakSet()


forksafe.register(_Maintainer, "_lock")
# Registered after bytecache.forksafe's hooks, so the thread stops before the locks are taken
# (CPython runs ``before`` hooks last-registered first, the others first-registered first).
os.register_at_fork(
    before=_Maintainer.stop_for_fork,
    after_in_parent=_Maintainer.restart_after_fork,
    after_in_child=_Maintainer.forget_after_fork,
)
