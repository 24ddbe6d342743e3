"""bytecache for Airflow 3.1-3.3: a byte-bounded DAG cache for the scheduler (and, opt-in, the API server).

Installed with ``pip install 'bytecache[airflow]'``; the ``airflow.plugins`` entry point
``bytecache = bytecache_airflow.plugin:BytecachePlugin`` loads it into a stock ``airflow scheduler``,
which uses it once ``[scheduler] dag_cache_max_bytes`` is set (installing alone changes nothing).
"""

from __future__ import annotations

__all__ = ["ByteBoundedDagBag", "DagCacheConfigError", "read_scheduler_settings", "read_api_settings"]


def __getattr__(name: str):
    # Lazy: importing the package must not import Airflow's models (the plugin loader imports it).
    if name == "ByteBoundedDagBag":
        from bytecache_airflow.dagbag import ByteBoundedDagBag

        return ByteBoundedDagBag
    if name in ("DagCacheConfigError", "read_scheduler_settings", "read_api_settings"):
        from bytecache_airflow import settings

        return getattr(settings, name)
    raise AttributeError(name)
