"""What a DAG bag holds, measured object by object: the exact figure the bytes gauge is checked against."""

from __future__ import annotations

import time


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
