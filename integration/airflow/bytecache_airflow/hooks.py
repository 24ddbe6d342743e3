"""Where the integration attaches to a stock Airflow 3.1, 3.2 or 3.3.

Scheduler: ``SchedulerJobRunner.__init__`` builds its bag by calling one module global of
``airflow.jobs.scheduler_job_runner`` -- ``CachedDBDagBag`` on 3.3, ``DBDagBag`` on 3.1 and 3.2
(:attr:`bytecache_airflow.versions.ReleaseLine.builder`). :func:`install_scheduler_hook` rebinds
that one global to :func:`scheduler_dag_bag_factory`, which builds a :class:`ByteBoundedDagBag`
from ``[scheduler] dag_cache_*``. No Airflow file changes and no other name is touched. The
plugin calls it when it is loaded and again from the ``on_starting`` listener hook, which
``Job()`` fires before the runner's constructor runs (``SchedulerJobRunner(job=Job())``).

On a release line :mod:`bytecache_airflow.versions` does not know (3.0, a future 3.4) a warning
is logged and nothing is changed; so too if the hook point is missing (the module global is not
Airflow's class, or the runner's constructor no longer refers to it).

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
from bytecache_airflow.versions import UnsupportedAirflow, airflow_version, current

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


def scheduler_dag_bag_factory(load_op_links: bool = True, **airflow_kwargs: Any):
    """Stand-in for the class the runner builds its bag from: same call, our bag.

    ``airflow_kwargs`` are the runner's own (3.3: ``cache_size=512, cache_ttl=0,
    stats_prefix="scheduler.dag_bag"``; 3.1/3.2: none); the cache they describe is replaced by
    ``[scheduler] dag_cache_max_bytes`` / ``dag_cache_ttl`` / ``dag_cache_policy``. A bad value
    exits with one line naming the option and the value. Without ``dag_cache_max_bytes``, or with
    ``dag_cache_policy = airflow``, it builds Airflow's own bag with the runner's arguments.
    """
    try:
        settings = read_scheduler_settings()
    except DagCacheConfigError as exc:
        raise SystemExit(f"bytecache: {exc}") from None
    airflows = _describe_airflow_cache(airflow_kwargs)
    if not settings.enabled:
        log.info("%s (%s)", settings.why_not_enabled(), airflows)
        return current().airflow_bag_class()(load_op_links, **airflow_kwargs)

    from bytecache_airflow.dagbag import ByteBoundedDagBag

    bag = ByteBoundedDagBag(
        load_op_links,
        max_bytes=settings.max_bytes,
        ttl=settings.ttl,
        policy=settings.policy,
        stats_prefix=airflow_kwargs.get("stats_prefix") or _SCHEDULER_PREFIX,
        gc_freeze=settings.gc_freeze,
    )
    log.info("bytecache: scheduler DAG cache %s (replaces %s)", settings.describe(), airflows)
    _warn_if_ttl_below_revalidation(settings.ttl)
    return bag


def _describe_airflow_cache(airflow_kwargs: dict) -> str:
    size = airflow_kwargs.get("cache_size")
    return f"Airflow's {size}-entry LRU" if size else "Airflow's unbounded DAG dict"


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


def _hook_point(module: Any, builder: str) -> str | None:
    """Why ``module`` does not offer our hook point (its global ``builder``), or None if it does."""
    airflows = current().airflow_bag_class()
    bound = getattr(module, builder, None)
    if bound is None:
        return f"{_RUNNER_MODULE}.{builder} does not exist"
    if bound is not airflows and not getattr(bound, "__bytecache_hook__", False):
        return f"{_RUNNER_MODULE}.{builder} is {bound!r}, not Airflow's class"
    runner = getattr(module, "SchedulerJobRunner", None)
    init = getattr(runner, "__init__", None)
    init = inspect.unwrap(init) if init is not None else None  # a profiler or test may wrap it
    if init is None or builder not in getattr(getattr(init, "__code__", None), "co_names", ()):
        return f"SchedulerJobRunner.__init__ no longer builds its bag through {builder}"
    return None


def _warn_once(message: str) -> None:
    global _warned_missing
    if not _warned_missing:
        _warned_missing = True
        log.warning("%s", message)


def install_scheduler_hook(*, import_module: bool = False) -> bool:
    """Route the scheduler's bag construction to :func:`scheduler_dag_bag_factory`.

    Returns True if the hook is in place. Only touches an already-imported runner module unless
    ``import_module`` (a process that never imports the scheduler does not pay for it).
    """
    module = sys.modules.get(_RUNNER_MODULE)
    if module is None:
        if not import_module:
            return False
        import importlib

        module = importlib.import_module(_RUNNER_MODULE)
    try:
        builder = current().builder
    except UnsupportedAirflow as exc:
        _warn_once(str(exc))
        return False
    if getattr(module, builder, None) is scheduler_dag_bag_factory:
        return True
    problem = _hook_point(module, builder)
    if problem is not None:
        _warn_once(
            f"bytecache: hook point missing in Airflow {airflow_version()} ({problem}); leaving Airflow's DAG cache unchanged"
        )
        return False
    setattr(module, builder, scheduler_dag_bag_factory)
    return True


def uninstall_scheduler_hook() -> None:
    module = sys.modules.get(_RUNNER_MODULE)
    if module is None:
        return
    try:
        release = current()
    except UnsupportedAirflow:
        return
    if getattr(module, release.builder, None) is scheduler_dag_bag_factory:
        setattr(module, release.builder, release.airflow_bag_class())


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
        True,
        max_bytes=settings.max_bytes,
        ttl=settings.ttl,
        policy=settings.policy,
        stats_prefix="api_server.dag_bag",
        gc_freeze=settings.gc_freeze,
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
