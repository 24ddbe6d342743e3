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
the length of its serialized JSON (uncompressed, also when ``[core] compress_serialized_dags``
is on) times the in-memory/JSON ratio that a :class:`bytecache.measure.Calibrator` learns from
sampled deep measurements. Evicted DAGs are cyclic garbage; their bytes are tracked until a
full collection and reclaimed by :class:`~bytecache_airflow.reclaim.Reclaimer`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import weakref
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from uuid import UUID

from sqlalchemy import Text, cast, func, select

from bytecache import ByteCache, EvictionCause, format_size
from bytecache.measure import Calibrator, walk_sizeof

from bytecache_airflow.reclaim import Reclaimer
from bytecache_airflow.settings import DEFAULT_MAX_BYTES, DEFAULT_POLICY
from bytecache_airflow.versions import current as _release_line

_RELEASE = _release_line()  # UnsupportedAirflow on a release line we do not attach to
stats = _RELEASE.stats()
deserialize_dag = _RELEASE.deserialize_dag

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.serialization.definitions.dag import SerializedDAG

__all__ = ["ByteBoundedDagBag", "serialized_size"]

log = logging.getLogger(__name__)

#: Fallback bytes-in-memory per JSON byte until the calibrator has a sample (measured 3.5-5.3).
DEFAULT_RATIO = 4.0
#: Budget assumed for the reclaim trigger when there is no byte cap.
_UNCAPPED_RECLAIM_FLOOR = 64 * 1024**2


class _Entry:
    """A cached DAG; attribute names match Airflow's ``_CacheEntry`` (dag, dag_hash, last_validated).

    Mutable so that revalidation updates ``last_validated`` in place instead of storing a new
    value (a replacement would look like an eviction to the accounting)."""

    __slots__ = ("dag", "dag_hash", "last_validated", "serialized_bytes", "weight")

    def __init__(self, dag: SerializedDAG, dag_hash: str, last_validated: float, serialized_bytes: int) -> None:
        self.dag = dag
        self.dag_hash = dag_hash
        self.last_validated = last_validated
        self.serialized_bytes = serialized_bytes
        self.weight = 0

    def __repr__(self) -> str:
        return f"_Entry(dag_id={getattr(self.dag, 'dag_id', None)!r}, serialized_bytes={self.serialized_bytes}, weight={self.weight})"


class _NotFound(Exception):
    """The version (or its serialized DAG) is not in the DB: return None, cache nothing."""


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
        calibrator: Calibrator | None = None,
        default_ratio: float = DEFAULT_RATIO,
        revalidation_interval: float | None = None,
        maintenance_interval: float = 0.25,
        reclaim_soft_fraction: float = 0.25,
        reclaim_hard_fraction: float = 0.5,
        reclaim_min_interval: float = 30.0,
        background: bool = True,
    ) -> None:
        super().__init__(load_op_links=load_op_links, cache_size=0, cache_ttl=0, stats_prefix=stats_prefix)
        if revalidation_interval is not None:
            self._revalidation_interval = revalidation_interval
        self._timer = timer
        self._cache = ByteCache(
            max_bytes if max_bytes else None, ttl=ttl or None, timer=timer, policy=policy, on_evict=self._on_evict
        )
        # Airflow code that peeks at ``_dags`` (len, membership, ``[key].dag``) keeps working.
        self._dags = self._cache  # type: ignore[assignment]
        # The stdlib walker, not pympler: pympler's import (numpy) and its scratch memory while
        # it walks a 2,000-task DAG would show up in the very RSS the budget is meant to bound.
        self.calibrator = calibrator if calibrator is not None else Calibrator(measure=walk_sizeof)
        self.default_ratio = default_ratio
        self._calibrated_on_used = False
        self.maintenance_interval = maintenance_interval
        self.reclaimer = Reclaimer(
            self._reclaim_budget,
            soft_fraction=reclaim_soft_fraction,
            hard_fraction=reclaim_hard_fraction,
            min_interval=reclaim_min_interval,
            timer=timer,
            on_collect=self._on_collect,
        )
        self._last_maintenance = timer()
        self._sent_gauges: dict[str, int] = {}
        # Every gauge is re-sent this often even if unchanged: a backend configured after the
        # bag was built (the scheduler initializes its stats client later) still gets them all.
        self.gauge_resend_interval = 30.0
        self._last_full_send = timer()
        self._maintaining = threading.Lock()
        if background:
            _Maintainer.register(self)

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

    def describe(self) -> str:
        budget = "no byte cap" if self.max_bytes is None else format_size(self.max_bytes)
        return f"budget={budget}, ttl={'off' if self.ttl is None else f'{self.ttl:g}s'}, policy={self.policy}"

    # -- loading ---------------------------------------------------------------------------
    def _weigh(self, dag: SerializedDAG, size: int) -> int:
        # Fresh DAGs only seed the ratio (its warm-up); after that the calibrator samples DAGs as
        # they leave the cache (``_on_evict``), because a DAG the scheduler has worked with is
        # bigger than a fresh one -- measured 20% (walk/JSON 7.8-8.1 against 6.1-6.8 fresh, at
        # every size) -- and it is the used size that the budget has to bound.
        if self.calibrator.seen < self.calibrator.warmup:
            self.calibrator.observe(dag, size)
        return int(self.calibrator.weight(size, default_ratio=self.default_ratio))

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
        entry.weight = self._weigh(entry.dag, entry.serialized_bytes)  # deep sampling is not load time
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
        dag = deserialize_dag(data, self.load_op_links)
        if not dag:
            raise _NotFound
        return _Entry(dag, dag_hash, validated, size)

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

    def _get_dag(self, version_id: UUID | str, session: Session) -> SerializedDAG | None:
        if isinstance(version_id, str):
            version_id = UUID(version_id)  # one key per version, whichever form the caller has
        entry, loaded = self._lookup(version_id, session)
        now = self._timer()
        if entry is not None and not loaded:
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
        entry.weight = self._weigh(entry.dag, entry.serialized_bytes)
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
        self.reclaimer.add(weight)
        if cause is EvictionCause.SIZE:
            stats.incr(f"{self._stats_prefix}.cache_evictions_size")
        elif cause is EvictionCause.EXPIRED:
            stats.incr(f"{self._stats_prefix}.cache_evictions_expired")
        else:
            return  # replaced or deleted: possibly never used, so not a sample
        # The first used DAG measured replaces the warm-up's fresh ones.
        if self.calibrator.observe(value.dag, value.serialized_bytes, restart=not self._calibrated_on_used):
            self._calibrated_on_used = True

    def _reclaim_budget(self) -> int:
        maxsize = self._cache.maxsize
        if maxsize is not None:
            return maxsize
        return max(self._cache.currsize, _UNCAPPED_RECLAIM_FLOOR)

    def _on_collect(self, ms: float, freed_estimate: int) -> None:
        stats.incr(f"{self._stats_prefix}.cache_reclaims")
        stats.timing(f"{self._stats_prefix}.cache_reclaim_duration", ms)
        log.debug("bytecache: gc.collect() took %.1f ms to reclaim ~%s of evicted DAGs", ms, format_size(freed_estimate))

    def _on_cache_size(self, *, rate: float = 1.0) -> None:
        self._maybe_maintain(self._timer())

    # -- maintenance: expiry, reclaim, gauges (rate-limited; never per hit) --------------------
    def _maybe_maintain(self, now: float, *, loaded: bool = False) -> None:
        if now - self._last_maintenance >= self.maintenance_interval:
            self.maintain(now=now)
        elif loaded and self.reclaimer.uncollected:
            # Only loads evict for size: check the reclaim trigger right after one.
            self.reclaimer.maybe_collect()

    def maintain(self, *, now: float | None = None, force: bool = False) -> None:
        """Drop expired entries, reclaim evicted memory if due, return freed heap to the OS after
        a full collection (at most every ``reclaimer.trim_interval`` s), send changed gauges.

        Called from lookups (at most every ``maintenance_interval`` seconds of the bag's timer)
        and from a daemon thread once a second, so gauges and TTL expiry stay current while the
        scheduler is idle. ``force`` sends every gauge now.
        """
        if not self._maintaining.acquire(blocking=force):
            return  # another thread is on it
        try:
            now = self._timer() if now is None else now
            if force or now - self._last_maintenance >= self.maintenance_interval:
                self._last_maintenance = now
                if self._cache.ttl is not None:
                    self._cache.expire()
                self.reclaimer.maybe_collect()
                trim_ms = self.reclaimer.maybe_trim()
                if trim_ms is not None:
                    stats.timing(f"{self._stats_prefix}.cache_trim_duration", trim_ms)
                if now - self._last_full_send >= self.gauge_resend_interval:
                    force = True
                if force:
                    self._last_full_send = now
                self.flush_gauges(force=force)
        finally:
            self._maintaining.release()

    def gauges(self) -> dict[str, int]:
        s = self._cache.stats()
        return {
            "cache_size": s.entries,
            "cache_bytes": s.currsize,
            "cache_max_bytes": s.maxsize or 0,
            "cache_uncollected_bytes": self.reclaimer.refresh(),
        }

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
    """One daemon thread per process that maintains every live bag once a second."""

    interval = 1.0
    _bags: weakref.WeakSet[ByteBoundedDagBag] = weakref.WeakSet()
    _lock = threading.Lock()
    _thread: threading.Thread | None = None
    _pid: int | None = None

    @classmethod
    def register(cls, bag: ByteBoundedDagBag) -> None:
        with cls._lock:
            cls._bags.add(bag)
            if cls._thread is None or cls._pid != os.getpid() or not cls._thread.is_alive():
                cls._pid = os.getpid()
                cls._thread = threading.Thread(target=cls._run, name="bytecache-dagbag-maintenance", daemon=True)
                cls._thread.start()

    @classmethod
    def _run(cls) -> None:
        stop = threading.Event()
        while not stop.wait(cls.interval):
            if cls._pid != os.getpid():
                return
            for bag in list(cls._bags):
                try:
                    bag.maintain()
                except Exception:  # never let maintenance kill the thread
                    log.exception("bytecache: DAG bag maintenance failed")


def _reset_after_fork() -> None:
    _Maintainer._thread = None
    _Maintainer._bags = weakref.WeakSet()


os.register_at_fork(after_in_child=_reset_after_fork)
