"""Everything that differs between the Airflow releases the integration supports, in one place.

Read from the released wheels (``airflow/models/dagbag.py`` and
``airflow/jobs/scheduler_job_runner.py`` of each):

* 3.1: ``DBDagBag(load_op_links=False)``, a plain dict, never evicted, with no staleness check
  (apache/airflow#65696);
* 3.2: ``DBDagBag(load_op_links=False)``, the same dict (``DBDagBag`` accepts a ``cache_size``
  that the scheduler never passes);
* 3.3: ``CachedDBDagBag(load_op_links=False, cache_size=512, cache_ttl=0, stats_prefix=...)``, a
  512-entry LRU whose entries are re-checked against the DB's ``dag_hash``.

In every line the runner calls a global of ``airflow.jobs.scheduler_job_runner`` bound to a class
of ``airflow.models.dagbag`` (:attr:`ReleaseLine.builder`), reads through
``get_dag_for_run(dag_run=..., session=...)``, and the bag keys its entries by
``dag_version_id``. So one :class:`~bytecache_airflow.dagbag.ByteBoundedDagBag` serves all three:
on 3.3 it subclasses ``CachedDBDagBag``; on 3.1 and 3.2 it subclasses :class:`_CachedBagSurface`,
``DBDagBag`` plus the few members of 3.3's bag that ours builds on (lock, metric hooks,
revalidation window, ``dag_hash`` query), so the byte budget, TTL, policy, ``dag_hash``
revalidation, single flight, reclaim and metrics are the same code and the same metric names
everywhere. Which version a run resolves to (``_version_from_dag_run``) stays each release's own.
The other per-release facts: where Airflow's stats client lives (if a patch release moves it,
one warning and no metrics rather than a scheduler that cannot start), which class deserializes
a stored DAG (``SerializedDAG`` on 3.1, ``DagSerialization`` since 3.2), and where the parsing
``BundleDagBag`` lives (the tests and profiling parse with it).

3.0 is not supported: its scheduler builds a ``SchedulerDagBag`` defined inside the runner module
and reads it with ``get_dag(dag_run=...)``, another read method and another key. On 3.0, as on
any release line not in :data:`RELEASE_LINES`, the plugin logs :func:`unsupported_message` and
leaves Airflow's DAG cache unchanged.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "RELEASE_LINES",
    "ReleaseLine",
    "UnsupportedAirflow",
    "airflow_version",
    "current",
    "unsupported_message",
]


log = logging.getLogger("bytecache_airflow")


class UnsupportedAirflow(RuntimeError):
    """The installed Airflow is not a release line the integration knows how to attach to."""


@dataclass(frozen=True)
class ReleaseLine:
    """How one Airflow release line (``major.minor``) builds, types and reports its scheduler's bag."""

    minor: str
    #: Name of the ``airflow.jobs.scheduler_job_runner`` global (a class of ``airflow.models.dagbag``)
    #: whose call in ``SchedulerJobRunner.__init__`` builds the bag: the one name the hook rebinds.
    builder: str
    _bag_base: Callable[[], type]
    #: Airflow's stats client: (module, attribute), or (module, None) where the module is the client.
    stats_client: tuple[str, str | None]
    _restart_stats: Callable[[], None]
    #: The class in ``airflow.serialization.serialized_objects`` that ``SerializedDagModel.dag`` uses.
    dag_serializer: str
    #: Module holding ``BundleDagBag`` and ``sync_bag_to_db`` (the tests and profiling parse with them).
    parsing_module: str
    #: Whether ``BundleDagBag`` takes the bundle's name (3.2+).
    bundle_bag_takes_name: bool

    def airflow_bag_class(self) -> type:
        """Airflow's class the scheduler builds its bag from (``policy = airflow`` builds it as is)."""
        import airflow.models.dagbag

        return getattr(airflow.models.dagbag, self.builder)

    def bag_base(self) -> type:
        """The class :class:`~bytecache_airflow.dagbag.ByteBoundedDagBag` subclasses."""
        return self._bag_base()

    @functools.cache  # noqa: B019 (a handful of module-level instances: nothing to leak)
    def stats(self) -> Any:
        """Airflow's stats client (``incr`` / ``gauge`` / ``timing``), as Airflow's own bag uses it.

        If a patch release moved it, the DAG cache's metrics are off and one warning says so: a
        scheduler must not fail to start over metrics."""
        module, attribute = self.stats_client
        try:
            client = importlib.import_module(module)
            return getattr(client, attribute) if attribute else client
        except (ImportError, AttributeError) as exc:
            log.warning(
                "bytecache: Airflow's stats client is not at %s%s as in Airflow %s (%s: %s); the DAG cache's metrics are off",
                module, f".{attribute}" if attribute else "", self.minor, type(exc).__name__, exc,
            )
            return NoStats()

    def deserialize_dag(self, data: dict, load_op_links: bool) -> Any:
        """What ``SerializedDagModel.dag`` does with a decoded ``data`` column."""
        serialized_objects = importlib.import_module("airflow.serialization.serialized_objects")
        serializer = getattr(serialized_objects, self.dag_serializer)
        serializer._load_operator_extra_links = load_op_links
        return serializer.from_dict(data)

    def restart_stats(self) -> None:
        """Make Airflow's stats client re-read ``[metrics]`` (for a process that changed it)."""
        self._restart_stats()

    def parse_bundle(self, path: str | Path, bundle_path: str | Path, bundle_name: str) -> tuple[Any, Callable]:
        """``(BundleDagBag of path, sync_bag_to_db)``: the dag processor's parse of a bundle's files."""
        parsing = importlib.import_module(self.parsing_module)
        named = {"bundle_name": bundle_name} if self.bundle_bag_takes_name else {}
        return parsing.BundleDagBag(str(path), bundle_path=Path(bundle_path), **named), parsing.sync_bag_to_db


# -- 3.1 and 3.2: DBDagBag with the surface of 3.3's CachedDBDagBag ---------------------------------
@functools.cache
def _cached_bag_surface() -> type:
    import threading

    from sqlalchemy import select
    from sqlalchemy.orm import joinedload

    from airflow.configuration import conf
    from airflow.models.dag_version import DagVersion
    from airflow.models.dagbag import DBDagBag

    stats = current().stats()

    class _CachedBagSurface(DBDagBag):
        """``DBDagBag`` with what ``ByteBoundedDagBag`` uses of 3.3's ``CachedDBDagBag``.

        The constructor takes 3.3's keywords (a cache size and TTL of 0: the subclass brings its
        own cache). The store is shared by the scheduler's threads, so there is a real lock; each
        lookup's outcome goes through the ``_on_cache_*`` hooks, which send ``<prefix>.cache_hit``
        and friends; ``_revalidation_interval`` is ``[core] min_serialized_dag_update_interval``.
        ``get_dag``, ``get_serialized_dag_model`` (3.1 has neither) and a non-caching
        ``iter_all_latest_version_dags`` (3.1's caches every DAG it walks) behave as on 3.3.
        """

        def __init__(self, load_op_links: bool = True, *, cache_size: int = 0, cache_ttl: int = 0,
                     stats_prefix: str) -> None:
            if cache_size or cache_ttl:
                raise ValueError(f"cache_size/cache_ttl must be 0 here (the subclass caches), got {cache_size}/{cache_ttl}")
            if not stats_prefix:
                raise ValueError("stats_prefix must be set")
            super().__init__(load_op_links=load_op_links)
            self._lock = threading.RLock()
            self._stats_prefix = stats_prefix
            self._revalidation_interval = conf.getint("core", "min_serialized_dag_update_interval")

        def _on_cache_hit(self) -> None:
            stats.incr(f"{self._stats_prefix}.cache_hit")

        def _on_cache_miss(self) -> None:
            stats.incr(f"{self._stats_prefix}.cache_miss")

        def _on_cache_clear(self) -> None:
            stats.incr(f"{self._stats_prefix}.cache_clear")

        def _on_cache_size(self, *, rate: float = 1.0) -> None:
            stats.gauge(f"{self._stats_prefix}.cache_size", len(self._dags), rate=rate)

        @staticmethod
        def _current_dag_hash(version_id, session) -> str | None:
            from airflow.models.serialized_dag import SerializedDagModel

            return session.scalar(
                select(SerializedDagModel.dag_hash).where(SerializedDagModel.dag_version_id == version_id)
            )

        def get_dag(self, version_id, session):
            return self._get_dag(version_id=version_id, session=session)

        def get_serialized_dag_model(self, version_id, session):
            dag_version = session.get(DagVersion, version_id, options=[joinedload(DagVersion.serialized_dag)])
            if not dag_version or not (serdag := dag_version.serialized_dag):
                return None
            serdag.load_op_links = self.load_op_links
            return serdag

        def iter_all_latest_version_dags(self, *, session):
            from airflow.models.serialized_dag import SerializedDagModel

            for serdag in session.scalars(select(SerializedDagModel)):
                serdag.load_op_links = self.load_op_links
                if dag := serdag.dag:
                    yield dag

    return _CachedBagSurface


def _cached_db_dag_bag() -> type:
    from airflow.models.dagbag import CachedDBDagBag

    return CachedDBDagBag


# -- stats clients -------------------------------------------------------------------------------
class NoStats:
    """Drops every metric: the stand-in when Airflow's stats client cannot be imported."""

    def incr(self, *args: Any, **kwargs: Any) -> None:
        pass

    decr = gauge = timing = incr


def _restart_stats_3_1() -> None:
    # 3.1 picks the backend when ``Stats`` is created (at import): choose it again from [metrics].
    from airflow.configuration import conf
    from airflow.metrics.base_stats_logger import NoStatsLogger
    from airflow.stats import Stats

    if conf.getboolean("metrics", "statsd_on"):
        from airflow.metrics.statsd_logger import get_statsd_logger as factory
    else:
        factory = NoStatsLogger
    type(Stats).factory = factory
    Stats.instance = None


def _restart_stats_3_2() -> None:
    from airflow._shared.observability.metrics.stats import Stats
    from airflow.observability.metrics import stats_utils

    Stats.initialize(factory=stats_utils.get_stats_factory(Stats))


def _restart_stats_3_3() -> None:
    from airflow._shared.observability.metrics import stats
    from airflow.observability.metrics import stats_utils

    stats.initialize(factory=stats_utils.get_stats_factory(), export_legacy_names=False)


_SHARED_STATS = "airflow._shared.observability.metrics.stats"
RELEASE_LINES: dict[str, ReleaseLine] = {
    "3.1": ReleaseLine("3.1", "DBDagBag", _cached_bag_surface, ("airflow.stats", "Stats"), _restart_stats_3_1,
                       "SerializedDAG", "airflow.models.dagbag", False),
    "3.2": ReleaseLine("3.2", "DBDagBag", _cached_bag_surface, (_SHARED_STATS, "Stats"), _restart_stats_3_2,
                       "DagSerialization", "airflow.dag_processing.dagbag", True),
    "3.3": ReleaseLine("3.3", "CachedDBDagBag", _cached_db_dag_bag, (_SHARED_STATS, None), _restart_stats_3_3,
                       "DagSerialization", "airflow.dag_processing.dagbag", True),
}


def airflow_version() -> str:
    from airflow import __version__

    return __version__


def unsupported_message(version: str) -> str:
    """The one line logged (as a warning) on a release line not in :data:`RELEASE_LINES`."""
    return (
        f"bytecache: Airflow {version} is not supported (supported: {', '.join(RELEASE_LINES)}); "
        "leaving Airflow's DAG cache unchanged"
    )


@functools.cache
def current() -> ReleaseLine:
    """The installed Airflow's release line; :class:`UnsupportedAirflow` if it is not one we know."""
    version = airflow_version()
    line = RELEASE_LINES.get(".".join(version.split(".")[:2]))
    if line is None:
        raise UnsupportedAirflow(unsupported_message(version))
    return line
