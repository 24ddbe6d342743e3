"""Bytes of bookkeeping per entry: what each cache allocates beyond the keys and values it holds.

    .venv/bin/python -m benchmarks.overhead [--entries 20000]

Every cache is filled to ``--entries`` entries, then driven by a cyclic sweep over twice as many
keys (so a policy's ghosts, sketch and candidate lists are at their steady size), with keys and
values allocated before tracing starts: ``tracemalloc`` then counts only the cache's own
structures. Printed per entry, and as the difference to ``cachetools.LRUCache``. Deterministic up
to the allocator's rounding; run it beside a change to see what the change costs.
"""

from __future__ import annotations

import argparse
import gc
import tracemalloc

import cachetools

from bytecache import ByteCache


def _traced_bytes(make, keys: list, value: object, weight: int) -> int:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    cache = make()
    setter = getattr(cache, "set", None)
    for key in keys:  # the sweep: every key misses once the cache is full
        if cache.get(key) is None:
            if setter is not None:
                setter(key, value, weight=weight)
            else:
                cache[key] = value
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del cache
    return held


def measure(entries: int) -> dict[str, float]:
    """Traced bytes per entry of each cache holding ``entries`` entries (after a 2x sweep)."""
    keys = [f"dag-{i:07d}" for i in range(2 * entries)] * 2
    value = object()
    caches = {
        "cachetools.LRUCache": lambda: cachetools.LRUCache(entries),
        "cachetools.TTLCache": lambda: cachetools.TTLCache(entries, ttl=3600),
        "ByteCache lru": lambda: ByteCache(entries, policy="lru"),
        "ByteCache tinylfu (default)": lambda: ByteCache(entries),
        "ByteCache tinylfu, ttl": lambda: ByteCache(entries, ttl=3600),
    }
    return {name: _traced_bytes(make, keys, value, 1) / entries for name, make in caches.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=20_000)
    args = ap.parse_args(argv)
    per_entry = measure(args.entries)
    base = per_entry["cachetools.LRUCache"]
    print(f"bookkeeping per entry, {args.entries:,} entries after a sweep over twice as many keys")
    print("| cache | bytes / entry | - cachetools.LRUCache |")
    print("|---|---|---|")
    for name, size in per_entry.items():
        print(f"| {name} | {size:.0f} | {size - base:+.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
