"""Where the integration attaches to a stock Airflow 3.3.

Scheduler: ``SchedulerJobRunner.__init__`` builds its bag by calling the module global
``CachedDBDagBag`` of ``airflow.jobs.scheduler_job_runner`` (with
``stats_prefix="scheduler.dag_bag"``). :func:`install_scheduler_hook` rebinds that one global to
:func:`scheduler_dag_bag_factory`, which builds a :class:`ByteBoundedDagBag` from
``[scheduler] dag_cache_*``. No Airflow file changes and no other name is touched. The plugin
calls it when it is loaded and again from the ``on_starting`` listener hook, which ``Job()``
fires before the runner's constructor runs (``SchedulerJobRunner(job=Job())``).

If the hook point is missing (the module global is not Airflow's ``CachedDBDagBag``, or the
runner's constructor no longer refers to it), a warning is logged and nothing is changed.

API server (opt-in by ``[api] dag_cache_max_bytes``): ``create_app`` builds its bag before it
loads plugins, so a root middleware from the plugin swaps ``app.state.dag_bag`` (and the same
object on mounted sub-apps, e.g. the execution API) for a byte-bounded one on the first ASGI
event it sees (the lifespan start-up), before any request is served.
"""

from __future__ import annotations

import inspect
import logging
import sys
from typing import Any

from bytecache_airflow.settings import DagCacheConfigError, read_api_settings, read_scheduler_settings

__all__ = [
    "install_scheduler_hook",
    "uninstall_scheduler_hook",
    "scheduler_dag_bag_factory",
    "ApiDagBagMiddleware",
    "build_api_dag_bag",
]

log = logging.getLogger("bytecache_airflow")

_RUNNER_MODULE = "airflow.jobs.scheduler_job_runner"
_SCHEDULER_PREFIX = "scheduler.dag_bag"
_warned_missing = False


def scheduler_dag_bag_factory(load_op_links: bool = True, *, cache_size: int = 0, cache_ttl: int = 0, stats_prefix: str = _SCHEDULER_PREFIX, **kwargs: Any):
    """Stand-in for ``CachedDBDagBag`` in ``scheduler_job_runner``: same call, our bag.

    ``cache_size``/``cache_ttl`` (Airflow's hard-coded 512 entries, no TTL) are replaced by
    ``[scheduler] dag_cache_max_bytes`` / ``dag_cache_ttl`` / ``dag_cache_policy``. A bad value
    exits with one line naming the option and the value. ``dag_cache_policy = airflow`` builds
    Airflow's own bag with Airflow's arguments.
    """
    from airflow.models.dagbag import CachedDBDagBag

    try:
        settings = read_scheduler_settings()
    except DagCacheConfigError as exc:
        raise SystemExit(f"bytecache: {exc}") from None
    if not settings.enabled:
        log.info(
            "bytecache: [scheduler] dag_cache_policy = airflow; using Airflow's own DAG cache (%d entries)",
            cache_size,
        )
        return CachedDBDagBag(load_op_links, cache_size=cache_size, cache_ttl=cache_ttl, stats_prefix=stats_prefix, **kwargs)

    from bytecache_airflow.dagbag import ByteBoundedDagBag

    bag = ByteBoundedDagBag(
        load_op_links,
        max_bytes=settings.max_bytes,
        ttl=settings.ttl,
        policy=settings.policy,
        stats_prefix=stats_prefix,
    )
    log.info("bytecache: scheduler DAG cache %s (replaces Airflow's %d-entry LRU)", settings.describe(), cache_size)
    return bag


scheduler_dag_bag_factory.__bytecache_hook__ = True  # type: ignore[attr-defined]


def _hook_point(module: Any) -> str | None:
    """Why ``module`` does not offer our hook point, or None if it does."""
    from airflow.models.dagbag import CachedDBDagBag

    current = getattr(module, "CachedDBDagBag", None)
    if current is None:
        return f"{_RUNNER_MODULE}.CachedDBDagBag does not exist"
    if current is not CachedDBDagBag and not getattr(current, "__bytecache_hook__", False):
        return f"{_RUNNER_MODULE}.CachedDBDagBag is {current!r}, not Airflow's class"
    runner = getattr(module, "SchedulerJobRunner", None)
    init = getattr(runner, "__init__", None)
    init = inspect.unwrap(init) if init is not None else None  # a profiler or test may wrap it
    if init is None or "CachedDBDagBag" not in getattr(getattr(init, "__code__", None), "co_names", ()):
        return "SchedulerJobRunner.__init__ no longer builds its bag through CachedDBDagBag"
    return None


def install_scheduler_hook(*, import_module: bool = False) -> bool:
    """Route the scheduler's bag construction to :func:`scheduler_dag_bag_factory`.

    Returns True if the hook is in place. Only touches an already-imported runner module unless
    ``import_module`` (a process that never imports the scheduler does not pay for it).
    """
    global _warned_missing
    module = sys.modules.get(_RUNNER_MODULE)
    if module is None:
        if not import_module:
            return False
        import importlib

        module = importlib.import_module(_RUNNER_MODULE)
    if getattr(module, "CachedDBDagBag", None) is scheduler_dag_bag_factory:
        return True
    problem = _hook_point(module)
    if problem is not None:
        if not _warned_missing:
            _warned_missing = True
            try:
                from airflow import __version__ as airflow_version
            except Exception:  # pragma: no cover
                airflow_version = "?"
            log.warning(
                "bytecache: hook point missing in Airflow %s (%s); leaving Airflow's DAG cache unchanged",
                airflow_version,
                problem,
            )
        return False
    module.CachedDBDagBag = scheduler_dag_bag_factory
    return True


def uninstall_scheduler_hook() -> None:
    module = sys.modules.get(_RUNNER_MODULE)
    if module is not None and getattr(module, "CachedDBDagBag", None) is scheduler_dag_bag_factory:
        from airflow.models.dagbag import CachedDBDagBag

        module.CachedDBDagBag = CachedDBDagBag


# -- API server ------------------------------------------------------------------------------
def build_api_dag_bag():
    """A byte-bounded bag for the API server from ``[api] dag_cache_*``, or None if not opted in."""
    try:
        settings = read_api_settings()
    except DagCacheConfigError as exc:
        raise SystemExit(f"bytecache: {exc}") from None
    if settings is None:
        return None
    from bytecache_airflow.dagbag import ByteBoundedDagBag

    bag = ByteBoundedDagBag(
        True, max_bytes=settings.max_bytes, ttl=settings.ttl, policy=settings.policy, stats_prefix="api_server.dag_bag"
    )
    log.info("bytecache: API server DAG cache %s (replaces [api] dag_cache_size)", settings.describe())
    return bag


class ApiDagBagMiddleware:
    """Pure ASGI root middleware: on the first event, swap the app's DAG bag for ours."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._swapped = False

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if not self._swapped:
            self._swapped = True
            root = scope.get("app")
            if root is not None:
                swap_app_dag_bag(root)
        await self.app(scope, receive, send)



def swap_app_dag_bag(root: Any):
    """Replace ``root.state.dag_bag`` (and the same object on mounted sub-apps) with ours."""
    from bytecache_airflow.dagbag import ByteBoundedDagBag

    old = getattr(getattr(root, "state", None), "dag_bag", None)
    if old is None or isinstance(old, ByteBoundedDagBag):
        return old
    new = build_api_dag_bag()
    if new is None:
        return old
    root.state.dag_bag = new
    for route in getattr(root, "routes", ()):
        sub = getattr(route, "app", None)
        state = getattr(sub, "state", None)
        if state is not None and getattr(state, "dag_bag", None) is old:
            state.dag_bag = new
    return new
