"""The Airflow internals the integration reaches into, imported in this one place.

Airflow moves private modules between minor releases; here a moved one costs a warning naming
what is missing, not an ``ImportError`` that stops the scheduler.
"""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.serialization.definitions.dag import SerializedDAG

__all__ = ["stats", "deserialize_dag"]

log = logging.getLogger("bytecache_airflow")


class NoStats:
    """Drops every metric: the stand-in when no stats client of Airflow's can be imported."""

    def incr(self, *args: Any, **kwargs: Any) -> None:
        pass

    decr = gauge = timing = incr


def import_stats() -> Any:
    """The stats client the scheduler initializes, or the closest one there is."""
    try:
        from airflow._shared.observability.metrics import stats as current  # Airflow 3.3

        return current
    except ImportError as exc:
        problem = f"{type(exc).__name__}: {exc}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a deprecation shim in 3.3; the real client in 3.0-3.2
            from airflow.stats import Stats
    except ImportError:
        log.warning(
            "bytecache: Airflow's stats client is not at airflow._shared.observability.metrics (%s) nor at "
            "airflow.stats; the DAG cache's metrics are off",
            problem,
        )
        return NoStats()
    log.warning(
        "bytecache: Airflow's stats client is not at airflow._shared.observability.metrics (%s); "
        "sending the DAG cache's metrics through airflow.stats.Stats",
        problem,
    )
    return Stats


stats = import_stats()


def deserialize_dag(data: dict, load_op_links: bool) -> SerializedDAG:
    """What ``SerializedDagModel.dag`` does with a decoded ``data`` column (Airflow 3.3)."""
    from airflow.serialization.serialized_objects import DagSerialization

    DagSerialization._load_operator_extra_links = load_op_links
    return DagSerialization.from_dict(data)
