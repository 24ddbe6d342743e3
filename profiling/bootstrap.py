"""Start Airflow's own CLI inside a process instrumented for profiling.

    python -m profiling.bootstrap scheduler --skip-serve-logs      # = airflow scheduler ...

Everything here is opt-in through environment variables, and nothing changes Airflow's files:

``BYTECACHE_PROFILE_DAG_CACHE_SIZE=N``
    caps the scheduler's own bag at N entries before the CLI runs (:func:`entry_cap`). On 3.3 it
    sets ``airflow.jobs.scheduler_job_runner.SCHEDULER_DAG_CACHE_SIZE`` (Airflow hard-codes 512);
    ``0`` gives ``CachedDBDagBag(cache_size=0, cache_ttl=0)``: a plain dict, the unbounded cache
    that Airflow < 3.3 ran. On 3.2, whose scheduler builds ``DBDagBag(load_op_links=False)`` and
    whose ``DBDagBag`` takes a ``cache_size`` (an LRU when > 0), it rebinds the runner module's
    builder global (:attr:`bytecache_airflow.versions.ReleaseLine.builder`) to that class with
    ``cache_size=N``. On 3.1 (no ``cache_size``) it refuses. (With bytecache installed, also set
    ``AIRFLOW__SCHEDULER__DAG_CACHE_POLICY=airflow`` so its plugin leaves Airflow's bag in place;
    on 3.2 the plugin then logs that its hook point is taken and leaves the rebound global alone.)
``BYTECACHE_PROFILE_TRACE=FILE``
    records every lookup of the scheduler's DAG bag -- version, weight, time, scheduler loop, and
    the lookup's duration if it loaded the version -- and, at the end of each loop, the bag's
    working-set gauge (the format: ``bytecache_airflow.trace``; gzip when FILE ends in ``.gz``).
    The weight is the bag's own when it has one (bytecache's calibrated weight), else the
    serialized JSON length times ``BYTECACHE_PROFILE_TRACE_RATIO`` (default 3.8, the measured mean
    deep/JSON ratio), memoized per version.
``BYTECACHE_PROFILE_REPORT=FILE``
    writes a JSON report when the scheduler exits gracefully (SIGTERM/SIGINT): bag class and
    entries, lookups / hits / misses / scheduler loops counted in-process, full (generation-2) GC
    collections and their time, the RSS at the start of the scheduling loop and after its first
    iteration; for a byte-bounded bag its ``snapshot()`` (the bag's public introspection API:
    entries with weights, counters, weighing and reclaim state) and, with
    ``BYTECACHE_PROFILE_DEEP=1``, the deep walk of the cached DAGs
    (``profiling.cache_contents``), taken at the same instant as the snapshot. Before writing
    it runs ``gc.unfreeze(); gc.collect()``, so evicted-but-uncollected DAGs are gone (also those
    the bag froze, which otherwise wait for its next reclaim).
``BYTECACHE_PROFILE_RELEASE=1``
    at interpreter exit, after the report was written, drops the byte-bounded bag's whole cache
    and adds to the report what the process got back (:func:`release_at_exit`): allocator
    bytes in use, RSS and PSS, before and after, beside the gauge at that instant.
"""

from __future__ import annotations

import atexit
import functools
import gc
import gzip
import inspect
import json
import os
import signal
import sys
import threading
import time
from typing import Callable

from bytecache_airflow.trace import access_line, loop_line
from profiling.cache_contents import cache_release, cached_dags, deep_walk, pympler_size

_state: dict = {
    "bag": None,
    "runner": None,
    "lookups": 0,
    "hits": 0,
    "misses": 0,
    "loops": 0,
    "gc_full": 0,
    "gc_full_ms": 0.0,
    "gc_all": 0,
    "gc_all_ms": 0.0,
    "loop_start": None,
    "started": time.time(),
    "reported": False,
    "in_gc": False,
}
_gc_t0: list[float] = [0.0]


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


_redeliveries: list[threading.Timer] = []


def _redeliver(signum: int, delay: float) -> None:
    t = threading.Timer(delay, os.kill, (os.getpid(), signum))
    t.daemon = True
    t.start()
    _redeliveries.append(t)


def _in_gc_callback(frame) -> bool:
    codes = {getattr(cb, "__code__", None) for cb in gc.callbacks}
    while frame is not None:
        if frame.f_code in codes:
            return True
        frame = frame.f_back
    return False


def _on_gc(phase: str, info: dict) -> None:
    if phase == "start":
        _state["in_gc"] = True
        _gc_t0[0] = time.perf_counter()
        return
    _state["in_gc"] = False
    ms = (time.perf_counter() - _gc_t0[0]) * 1000.0
    _state["gc_all"] += 1
    _state["gc_all_ms"] += ms
    if info.get("generation") == 2:
        _state["gc_full"] += 1
        _state["gc_full_ms"] += ms


class TraceWriter:
    def __init__(self, path: str, db_path: str | None, ratio: float) -> None:
        self.path = path
        self._f = gzip.open(path, "wt", compresslevel=6) if path.endswith(".gz") else open(path, "w")
        self._lock = threading.Lock()
        self._db_path = db_path
        self._ratio = ratio
        self._weights: dict[str, int] = {}
        self._conn = None
        self.records = 0

    def _json_length(self, key: str) -> int:
        import sqlite3

        if self._conn is None and self._db_path:
            self._conn = sqlite3.connect(f"file:{self._db_path}?mode=ro", uri=True, check_same_thread=False, timeout=30)
        if self._conn is None:
            return 0
        row = self._conn.execute(
            "SELECT length(data), length(data_compressed) FROM serialized_dag WHERE dag_version_id = ?", (key,)
        ).fetchone()
        return int(row[0] or 0) if row else 0

    def record(self, bag, version_id, loop: int, load_ms: float | None) -> None:
        key = version_id.hex if hasattr(version_id, "hex") and not isinstance(version_id, str) else str(version_id).replace("-", "")
        weight = None
        cache = getattr(bag, "cache", None)
        if cache is not None and hasattr(cache, "weight_of"):
            from uuid import UUID

            try:
                weight = cache.weight_of(UUID(key))
            except (KeyError, ValueError):
                # not cached (heavier than the whole budget): the weight the bag weighed it at
                working_set = getattr(bag, "working_set", None)
                weight = working_set.weight_of(UUID(key)) if working_set is not None else None
        if weight is None:
            weight = self._weights.get(key)
            if weight is None:
                try:
                    weight = int(self._json_length(key) * self._ratio)
                except Exception:
                    weight = 0
                self._weights[key] = weight
        line = access_line(key, weight, time.monotonic(), loop, load_ms)
        with self._lock:
            if not self._f.closed:  # lookups after the exit report are not traced
                self._f.write(line)
                self.records += 1

    def mark_loop(self, bag, loop: int) -> None:
        """The end of scheduler loop ``loop``, with the bag's working-set gauge at this moment."""
        snapshot = getattr(bag, "snapshot", None)
        snap = snapshot() if snapshot is not None else None
        line = loop_line(loop, time.monotonic(), *((snap.working_set_bytes, snap.working_set_entries, snap.working_set_window)
                                                   if snap is not None else (None, None, None)))
        with self._lock:
            if not self._f.closed:
                self._f.write(line)

    def close(self) -> None:
        with self._lock:
            if not self._f.closed:
                self._f.close()


_trace: TraceWriter | None = None


def count_hits_and_misses(bag, counts: dict) -> None:
    """Count a DAG bag's hits and misses into ``counts["hits"]`` / ``counts["misses"]``; set on
    the instance. Through the ``_on_cache_hit``/``_on_cache_miss`` hooks that Airflow 3.3's bags
    (and ours, on every release) call once per lookup; Airflow 3.1/3.2's ``DBDagBag`` has no such
    hooks, so there a lookup that deserializes (calls ``_read_dag``) is a miss and any other that
    finds its DAG a hit."""
    if not hasattr(bag, "_on_cache_hit"):
        _count_by_reads(bag, counts)
        return
    orig_hit, orig_miss = bag._on_cache_hit, bag._on_cache_miss

    def _on_hit(*a, **k):
        counts["hits"] += 1
        return orig_hit(*a, **k)

    def _on_miss(*a, **k):
        counts["misses"] += 1
        return orig_miss(*a, **k)

    bag._on_cache_hit, bag._on_cache_miss = _on_hit, _on_miss


def _count_by_reads(bag, counts: dict) -> None:
    orig_get, orig_read = bag._get_dag, bag._read_dag
    lookup = threading.local()

    def _read_dag(serdag):
        lookup.read = True
        return orig_read(serdag)

    def _get_dag(version_id, session):
        lookup.read = False
        dag = orig_get(version_id, session)
        if lookup.read:
            counts["misses"] += 1
        elif dag is not None:
            counts["hits"] += 1
        return dag

    bag._get_dag, bag._read_dag = _get_dag, _read_dag


def instrument_bag(bag, counts: dict, trace: TraceWriter | None = None) -> None:
    """Count (and, with ``trace``, record) the bag's lookups, hits and misses into ``counts``
    (``lookups``, ``hits``, ``misses``; ``loops`` is the caller's, the loop a lookup is traced in),
    on the instance. A traced lookup that counted a miss carries its duration."""
    count_hits_and_misses(bag, counts)  # first: before 3.3 it counts by wrapping _get_dag, inside this wrapper
    orig_get = bag._get_dag

    def _get_dag(version_id, session):
        counts["lookups"] += 1
        misses, start = counts["misses"], time.perf_counter()
        dag = orig_get(version_id, session)
        if trace is not None:
            load_ms = (time.perf_counter() - start) * 1000.0 if counts["misses"] != misses else None
            try:
                trace.record(bag, version_id, counts.get("loops", 0), load_ms)
            except Exception as exc:  # never break the scheduler for a trace line
                print(f"profiling.bootstrap: trace record failed: {exc!r}", file=sys.stderr)
        return dag

    bag._get_dag = _get_dag  # get_dag_for_run / get_dag call self._get_dag: the instance attribute wins


def write_report(reason: str) -> None:
    if _state["reported"]:
        return
    _state["reported"] = _state["reporting"] = True
    try:
        _write_report(reason)
    finally:
        _state["reporting"] = False


def _write_report(reason: str) -> None:
    if _trace is not None:
        # First: the deep walk below can take longer than the soak waits before its next SIGTERM,
        # and an exit in the middle of it would lose the trace's buffered (gzip) tail.
        _trace.close()
    t0 = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    collect_ms = (time.perf_counter() - t0) * 1000.0
    bag = _state["bag"]
    report: dict = {
        "reason": reason,
        "pid": os.getpid(),
        "uptime_s": time.time() - _state["started"],
        "rss_at_exit": _rss(),
        "final_collect_ms": collect_ms,
        "loop_start": _state["loop_start"],
        "first_loop": _state.get("first_loop"),
        "dag_cache_size_setting": _scheduler_cache_size(),
        **{k: _state[k] for k in ("lookups", "hits", "misses", "loops", "gc_full", "gc_full_ms", "gc_all", "gc_all_ms")},
    }
    if bag is not None:
        report["bag_class"] = f"{type(bag).__module__}.{type(bag).__qualname__}"
        snapshot = getattr(bag, "snapshot", None)
        if snapshot is None:  # Airflow's own bag: its store is Airflow's cachetools mapping
            report["entries"] = len(bag._dags)
        else:
            snap = snapshot()
            report["entries"] = len(snap.entries)
            report["snapshot"] = snap.to_dict()
            if hasattr(bag, "describe"):
                report["describe"] = bag.describe()
            if os.environ.get("BYTECACHE_PROFILE_DEEP") == "1":
                dags = cached_dags(bag)
                report["deep"] = deep_walk(dags)
                t1 = time.perf_counter()
                report["deep"]["pympler_bytes"] = pympler_size(dags)
                report["deep"]["pympler_ms"] = (time.perf_counter() - t1) * 1000.0
    if _trace is not None:
        report["trace"] = {"path": _trace.path, "records": _trace.records}
    _state["report"] = report
    _save_report(report)


def _save_report(report: dict) -> None:
    path = os.environ.get("BYTECACHE_PROFILE_REPORT")
    if path:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(report, f, indent=2, default=str)
        os.replace(tmp, path)


def release_at_exit() -> None:
    """At interpreter exit (an ``atexit`` hook), after the report: drop the byte-bounded bag's
    cache and add what the process got back to the report (``cache_contents.cache_release``).

    Not in the signal handler, where the report is written: there the scheduler is in the
    middle of a loop, and its frames and the DagRuns of its session still hold the DAGs it is
    working on, so dropping the cache would not free them. By now the SystemExit Airflow raised
    has unwound every frame; the bag and the interpreter are still whole."""
    report, bag = _state.get("report"), _state["bag"]
    if os.getpid() != _state.get("runner_pid") or report is None or getattr(bag, "snapshot", None) is None:
        return  # a forked worker, no report yet, or Airflow's own bag
    # The SIGTERMs re-delivered by the signal handler, or the soak's next one, would raise
    # SystemExit inside this hook (Python prints "Exception ignored in atexit callback" and goes
    # on exiting without the figure): the process is on its way out, so let nothing stop it.
    for timer in _redeliveries:
        timer.cancel()
    stopping = (signal.SIGTERM, signal.SIGINT)
    for signum in stopping:
        signal.signal(signum, signal.SIG_IGN)
    try:
        report["release"] = cache_release(bag)
    except Exception as exc:
        report["release_error"] = repr(exc)
    finally:
        for signum in stopping:
            signal.signal(signum, signal.SIG_DFL)
    _save_report(report)


def _scheduler_cache_size():
    mod = sys.modules.get("airflow.jobs.scheduler_job_runner")
    return getattr(mod, "SCHEDULER_DAG_CACHE_SIZE", None)


def entry_cap(sjr) -> Callable[[int], None] | None:
    """How to cap the bag that ``sjr`` (``airflow.jobs.scheduler_job_runner``) builds at N
    entries, or None when this Airflow's scheduler bag cannot be capped (3.1)."""
    if hasattr(sjr, "SCHEDULER_DAG_CACHE_SIZE"):  # 3.3: the runner passes cache_size=this global
        return functools.partial(setattr, sjr, "SCHEDULER_DAG_CACHE_SIZE")
    from bytecache_airflow.versions import current

    release = current()
    # Airflow's class, not whatever the global holds now: the bytecache plugin may have rebound it
    airflows = release.airflow_bag_class()
    if "cache_size" not in inspect.signature(airflows).parameters:
        return None

    def build_capped(entries: int) -> None:
        # 3.2's runner calls the builder without cache_size, so the keyword given here stands
        setattr(sjr, release.builder, functools.partial(airflows, cache_size=entries))

    return build_capped


def install() -> None:
    global _trace
    gc.callbacks.append(_on_gc)
    import airflow.jobs.scheduler_job_runner as sjr

    size = os.environ.get("BYTECACHE_PROFILE_DAG_CACHE_SIZE")
    if size is not None and size != "":
        cap = entry_cap(sjr)
        if cap is None:
            from airflow import __version__

            raise SystemExit(
                f"profiling.bootstrap: BYTECACHE_PROFILE_DAG_CACHE_SIZE={size} needs Airflow's "
                f"SCHEDULER_DAG_CACHE_SIZE (3.3+) or a DBDagBag that takes cache_size (3.2); "
                f"Airflow {__version__}'s scheduler has no entry cap to set"
            )
        try:
            cap(int(size))
        except ValueError:
            raise SystemExit(f"profiling.bootstrap: BYTECACHE_PROFILE_DAG_CACHE_SIZE={size!r} is not a whole number of entries") from None
    trace_path = os.environ.get("BYTECACHE_PROFILE_TRACE")
    if trace_path:
        conn = os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "")
        db_path = conn[len("sqlite:///"):].split("?")[0] if conn.startswith("sqlite:///") else None
        _trace = TraceWriter(trace_path, db_path, float(os.environ.get("BYTECACHE_PROFILE_TRACE_RATIO", "3.8")))

    runner_cls = sjr.SchedulerJobRunner
    orig_loop = runner_cls._run_scheduler_loop
    orig_do = runner_cls._do_scheduling
    orig_exit = runner_cls._exit_gracefully

    def _run_scheduler_loop(self):
        # The bag exists by now. (SchedulerJobRunner.__init__ is left alone on purpose: the
        # bytecache plugin checks that its code still builds the bag through CachedDBDagBag.)
        _state["runner"] = self
        _state["bag"] = bag = self.scheduler_dag_bag
        instrument_bag(bag, _state, _trace)
        print(
            f"profiling.bootstrap: scheduler DAG bag {type(bag).__module__}.{type(bag).__name__} "
            f"(store {type(bag._dags).__name__}, maxsize {getattr(bag._dags, 'maxsize', None)}, "
            f"SCHEDULER_DAG_CACHE_SIZE={_scheduler_cache_size()})",
            file=sys.stderr,
            flush=True,
        )
        _state["loop_start"] = {"t": time.time(), "rss": _rss()}
        return orig_loop(self)

    def _do_scheduling(self, session):
        _state["loops"] += 1
        try:
            return orig_do(self, session)
        finally:
            if _trace is not None:
                try:
                    _trace.mark_loop(_state["bag"], _state["loops"])
                except Exception as exc:
                    print(f"profiling.bootstrap: trace loop mark failed: {exc!r}", file=sys.stderr)
            if _state["loops"] == 1:
                # Start-up is over (executor workers forked, first queries compiled, first DAGs
                # read): the soak's baseline. The cache's own bytes at this point are recorded too.
                snapshot = getattr(_state["bag"], "snapshot", None)
                _state["first_loop"] = {"t": time.time(), "rss": _rss(),
                                        "cache_bytes": snapshot().cached_bytes if snapshot is not None else None}

    def _exit_gracefully(self, signum, frame):
        if os.getpid() == _state["runner_pid"]:
            if _state.get("reporting"):
                # The soak repeats SIGTERM every 20 s; the deep walk of a large cache on a loaded
                # machine takes longer, and exiting in the middle of it loses the whole report.
                _redeliver(signum, 5.0)
                return None
            try:
                write_report(f"signal {signum}")
            except Exception as exc:
                print(f"profiling.bootstrap: report failed: {exc!r}", file=sys.stderr)
            if _state["in_gc"] or _in_gc_callback(frame):
                # The handler runs at the first bytecode after the signal; right after a long
                # collection that is often a gc callback, where the SystemExit Airflow raises is
                # printed and ignored ("Exception ignored in: ..."). Re-deliver it in a moment.
                _redeliver(signum, 0.2)
                return None
            # A weakref callback run by the collector swallows it the same way, and the frame
            # does not show that: re-deliver after a grace period unless we are gone by then.
            _redeliver(signum, 5.0)
        return orig_exit(self, signum, frame)

    _state["runner_pid"] = os.getpid()
    if os.environ.get("BYTECACHE_PROFILE_RELEASE") == "1":
        atexit.register(release_at_exit)
    runner_cls._run_scheduler_loop = _run_scheduler_loop
    runner_cls._do_scheduling = _do_scheduling
    runner_cls._exit_gracefully = _exit_gracefully


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    install()
    from airflow.__main__ import main as airflow_main

    sys.argv = ["airflow", *argv]
    try:
        airflow_main()
    finally:
        if os.getpid() == _state["runner_pid"] and _state["bag"] is not None:
            try:
                write_report("exit")
            except Exception as exc:
                print(f"profiling.bootstrap: report failed: {exc!r}", file=sys.stderr)


if __name__ == "__main__":
    main()
