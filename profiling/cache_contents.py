"""What a DAG bag holds, measured object by object: the exact figure the bytes gauge is checked against."""

from __future__ import annotations

import time
import weakref


def cached_dags(bag) -> list:
    """The DAG objects a byte-bounded bag holds, read without touching their recency (the cache's
    ``peek``), in the order of ``bag.snapshot().entries``."""
    snap = bag.snapshot()
    by_key = {str(k): k for k in list(bag.cache)}
    dags = []
    for e in snap.entries:
        key = by_key.get(e.dag_version_id)
        entry = bag.cache.peek(key) if key is not None else None
        dags.append(getattr(entry, "dag", None))
    return dags


def deep_walk(dags: list) -> dict:
    """The object-exact size of what the cache holds: every object reachable from the cached
    DAGs, each counted once (``bytecache.measure.walk_sizeof`` over all of them together; types,
    modules, functions and code are process-wide and not counted), and per DAG."""
    from bytecache.measure import walk_sizeof

    t0 = time.perf_counter()
    live = tuple(d for d in dags if d is not None)
    # less the tuple's own bytes as the walker counts them (rounded to the allocator's step): an
    # equally long tuple of a type it skips
    together = walk_sizeof(live) - walk_sizeof((object,) * len(live))
    each = [walk_sizeof(d) if d is not None else None for d in dags]
    return {"walk_bytes": together, "walk_each": each, "entries": len(live), "ms": (time.perf_counter() - t0) * 1000.0}


def cache_release(bag, *, lock_timeout: float = 30.0) -> dict:
    """Drop everything a byte-bounded bag caches and measure what the process gets back
    (:func:`profiling.heap.release`: allocator bytes in use after a collection, RSS and PSS after
    ``malloc_trim(0)``). Destructive: for a process that is about to exit, after the gauge and
    the deep walk were read.

    The bag's maintenance lock is held meanwhile, so its thread does not collect, trim or
    calibrate between the readings. ``survivors``: indices (in ``snapshot().entries`` order, as
    ``deep_walk``'s ``walk_each``) of the cached DAGs something else still held after the drop
    -- a scheduler frame or a DagRun in the middle of its loop -- whose memory could not come
    back."""
    from bytecache_airflow.reclaim import malloc_trim

    from profiling.heap import release

    refs = [weakref.ref(d) if d is not None else None for d in cached_dags(bag)]
    entries = len(bag.cache)
    maintaining = bag._maintaining  # private: the profiler pauses the bag's own housekeeping
    paused = maintaining.acquire(timeout=lock_timeout)
    try:
        result = release(bag.cache.clear, trim=malloc_trim)
    finally:
        if paused:
            maintaining.release()
    result["entries_dropped"] = entries
    result["maintenance_paused"] = paused
    result["survivors"] = [i for i, ref in enumerate(refs) if ref is not None and ref() is not None]
    return result


def pympler_size(dags: list) -> int | None:
    try:
        from pympler.asizeof import asizeof
    except ImportError:
        return None
    live = [d for d in dags if d is not None]
    return int(asizeof(*live)) if live else 0


def airflow_cached_dags(bag) -> list:
    """The DAGs one of Airflow's own bags holds: 3.3's store is a cachetools mapping of entries
    with a ``dag``; 3.1/3.2's a plain dict of the DAGs themselves."""
    return [getattr(e, "dag", e) for e in list(bag._dags.values())]
