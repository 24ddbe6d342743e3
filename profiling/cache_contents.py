"""What a DAG bag holds, measured object by object: the exact figure the bytes gauge is checked against."""

from __future__ import annotations

import gc
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
    ``malloc_trim(0)``), beside the gauge at that instant. Destructive: for a process that is
    about to exit, after the figures that describe the cache were read.

    The bag's maintenance lock is held meanwhile, so its thread does not collect, trim or
    calibrate between the readings. ``walk_bytes``: the deep walk of the DAGs dropped, read
    just before (the allocators' figure should match it but for their rounding and the cache's
    own entries). ``survivors``: the cached DAGs something else still held
    after the drop (version id and deep walk), whose memory could not come back."""
    from bytecache.measure import walk_sizeof
    from bytecache_airflow.reclaim import malloc_trim

    from profiling.heap import release

    snap = bag.snapshot()
    dags = cached_dags(bag)
    walk = deep_walk(dags)["walk_bytes"]  # what is dropped, as the object walk counts it
    refs = {e.dag_version_id: weakref.ref(d) for e, d in zip(snap.entries, dags) if d is not None}
    del dags  # the drop must leave the weak references the only ones here
    gc.unfreeze()  # with dag_cache_gc_freeze the cached DAGs sit in the permanent generation
    with bag.maintenance_paused(lock_timeout) as paused:
        result = release(bag.cache.clear, trim=malloc_trim)
    result.update(gauge=snap.cached_bytes, walk_bytes=walk, entries_dropped=len(snap.entries), maintenance_paused=paused)
    result["survivors"] = [{"dag_version_id": key, "walk_bytes": walk_sizeof(ref())}
                           for key, ref in refs.items() if ref() is not None]
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
