"""The Airflow plugin, registered through the ``airflow.plugins`` entry point.

Loading it (which Airflow does in every component) installs the scheduler hook if the scheduler
runner module is already imported; its listener's ``on_starting`` installs it again right before
a job's runner is built. See :mod:`bytecache_airflow.hooks`.
"""

from __future__ import annotations

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin

from bytecache_airflow.hooks import api_root_middlewares, install_scheduler_hook

__all__ = ["BytecachePlugin", "DagCacheListener"]


class DagCacheListener:
    """Lifecycle listener: ``Job()`` calls ``on_starting`` before the runner builds its DAG bag."""

    @hookimpl
    def on_starting(self, component) -> None:
        install_scheduler_hook()


class BytecachePlugin(AirflowPlugin):
    name = "bytecache"
    listeners = [DagCacheListener()]

    @property
    def fastapi_root_middlewares(self) -> list[dict]:  # type: ignore[override]
        # Read by the API server's create_app only: validating [api] dag_cache_* here stops a bad
        # value before anything serves (see hooks.api_root_middlewares). Empty unless opted in.
        return api_root_middlewares()


install_scheduler_hook()
