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

API server (opt-in by ``[api] dag_cache_max_bytes``): ``create_app`` reads the plugin's root
middlewares (:func:`api_root_middlewares`), which is where ``[api] dag_cache_*`` is validated: a
bad value makes the API server refuse to start. ``create_app`` builds its bag before it loads
plugins, so the middleware swaps ``app.state.dag_bag`` (and the same object on mounted sub-apps,
e.g. the execution API) for a byte-bounded one on the first ASGI event it sees (the lifespan
start-up), before any request is served.
"""

from __future__ import annotations

import inspect
import logging
import sys
from typing import Any

from bytecache_airflow.settings import DagCacheConfigError, DagCacheSettings, read_api_settings, read_scheduler_settings

__all__ = [
    "install_scheduler_hook",
    "uninstall_scheduler_hook",
    "scheduler_dag_bag_factory",
    "ApiDagBagMiddleware",
    "api_root_middlewares",
    "build_api_dag_bag",
    "refuse_to_start",
]

log = logging.getLogger("bytecache_airflow")

_RUNNER_MODULE = "airflow.jobs.scheduler_job_runner"
_SCHEDULER_PREFIX = "scheduler.dag_bag"
_warned_missing = False


def scheduler_dag_bag_factory(load_op_links: bool = True, *, cache_size: int = 0, cache_ttl: int = 0, stats_prefix: str = _SCHEDULER_PREFIX, **kwargs: Any):
    """Stand-in for ``CachedDBDagBag`` in ``scheduler_job_runner``: same call, our bag if enabled.

    ``cache_size``/``cache_ttl`` (Airflow's hard-coded 512 entries, no TTL) are replaced by
    ``[scheduler] dag_cache_max_bytes`` / ``dag_cache_ttl`` / ``dag_cache_policy``. A bad value
    exits with one line naming the option and the value. Without ``dag_cache_max_bytes``, or with
    ``dag_cache_policy = airflow``, it builds Airflow's own bag with Airflow's arguments.
    """
    from airflow.models.dagbag import CachedDBDagBag

    try:
        settings = read_scheduler_settings()
    except DagCacheConfigError as exc:
        raise SystemExit(f"bytecache: {exc}") from None
    if not settings.enabled:
        log.info("%s (%d entries)", settings.why_not_enabled(), cache_size)
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
    _warn_if_ttl_below_revalidation(settings.ttl)
    return bag


def _warn_if_ttl_below_revalidation(ttl: float | None) -> None:
    # The scheduler's sweep period (how long until it visits a running run again) depends on the
    # number of running runs, unknown at start-up; [core] min_serialized_dag_update_interval is the
    # lower bound we can read. Airflow trusts an entry for that long after validating it, so a TTL
    # below it drops DAGs that Airflow's own cache would still serve from memory: every one not
    # revisited within the TTL is deserialized again, and that is most of them in a sweep.
    from airflow.configuration import conf

    window = conf.getint("core", "min_serialized_dag_update_interval", fallback=30)
    if ttl is not None and ttl < window:
        log.warning(
            "bytecache: [scheduler] dag_cache_ttl = %gs is shorter than [core] min_serialized_dag_update_interval"
            " = %ds: DAGs will expire between the scheduler's visits and be reloaded; use a TTL above the"
            " scheduler's sweep period",
            ttl,
            window,
        )


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
#: Exit status for a refused start: uvicorn's ``STARTUP_FAILURE`` and gunicorn's
#: ``WORKER_BOOT_ERROR`` are both 3, the status on which their supervisors stop instead of
#: restarting a worker that would fail the same way again.
STARTUP_FAILURE = 3
_api_logged = False


def refuse_to_start(error: DagCacheConfigError) -> SystemExit:
    """Write the one-line message to stderr; the caller raises what this returns."""
    sys.stderr.write(f"bytecache: {error}\n")
    sys.stderr.flush()
    return SystemExit(STARTUP_FAILURE)


def api_root_middlewares() -> list[dict]:
    """The plugin's ``fastapi_root_middlewares``: validates ``[api] dag_cache_*`` on the spot.

    Airflow reads this while ``create_app`` builds the app, before uvicorn serves (and, with one
    worker, in the ``airflow api-server`` process itself), so a bad value stops the start-up
    there. Raising later, from the ASGI lifespan, is swallowed by uvicorn's ``lifespan="auto"``:
    the server would serve without Airflow's own lifespan (no JWT validator for the execution API).
    """
    global _api_logged
    try:
        settings = read_api_settings()
    except DagCacheConfigError as exc:
        raise refuse_to_start(exc) from None
    if not settings.enabled:
        if not _api_logged:
            _api_logged = True
            log.info("%s ([api] dag_cache_size entries)", settings.why_not_enabled())
        return []
    return [{"middleware": ApiDagBagMiddleware, "name": "bytecache-dag-bag", "kwargs": {"settings": settings}}]


def build_api_dag_bag(settings: DagCacheSettings | None = None):
    """A byte-bounded bag for the API server from ``[api] dag_cache_*``, or None if not enabled.

    Raises :class:`DagCacheConfigError` on a bad value (validated already when the app was built).
    """
    settings = settings if settings is not None else read_api_settings()
    if not settings.enabled:
        return None
    from bytecache_airflow.dagbag import ByteBoundedDagBag

    bag = ByteBoundedDagBag(
        True, max_bytes=settings.max_bytes, ttl=settings.ttl, policy=settings.policy, stats_prefix="api_server.dag_bag"
    )
    log.info("bytecache: API server DAG cache %s (replaces [api] dag_cache_size)", settings.describe())
    return bag


class ApiDagBagMiddleware:
    """Pure ASGI root middleware: on the first event, swap the app's DAG bag for ours.

    ``create_app`` builds its bag before it loads plugins and gives the plugin no handle on the
    app, so the swap waits for the first ASGI event (the lifespan start-up, before any request).
    The settings were validated when the app was built; nothing here can fail on them.
    """

    def __init__(self, app: Any, settings: DagCacheSettings) -> None:
        self.app = app
        self.settings = settings
        self._swapped = False

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if not self._swapped:
            self._swapped = True
            root = scope.get("app")
            if root is not None:
                swap_app_dag_bag(root, self.settings)
        await self.app(scope, receive, send)


def swap_app_dag_bag(root: Any, settings: DagCacheSettings | None = None):
    """Replace ``root.state.dag_bag`` (and the same object on mounted sub-apps) with ours."""
    from bytecache_airflow.dagbag import ByteBoundedDagBag

    old = getattr(getattr(root, "state", None), "dag_bag", None)
    if old is None or isinstance(old, ByteBoundedDagBag):
        return old
    new = build_api_dag_bag(settings)
    if new is None:
        return old
    root.state.dag_bag = new
    for route in getattr(root, "routes", ()):
        sub = getattr(route, "app", None)
        state = getattr(sub, "state", None)
        if state is not None and getattr(state, "dag_bag", None) is old:
            state.dag_bag = new
    return new
