"""Replay a ``(key, weight)`` request trace through a cache and measure its hit ratios.

``replay(trace, make_cache)`` works with anything shaped like a mapping:

- a ``ByteCache`` (or anything with ``set(key, value, *, weight=...)``) is written with the
  request's weight as an explicit weight;
- anything else (``cachetools.LRUCache(maxsize, getsizeof=...)``, ...) is written with
  ``cache[key] = value``; the value stored is a ``Weighted`` object and the cache should be built
  with ``getsizeof=weight_of`` so that it weighs exactly the request's weight.

A request is a hit if ``cache.get(key, MISS)`` returns a value; otherwise the value is written
(a miss, then a load). A value the cache refuses because it is heavier than the whole budget
(``ValueError``, as cachetools and ByteCache raise) counts as a miss and is not stored.

Standard library only.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable, Iterable

__all__ = ["Weighted", "weight_of", "replay"]


class Weighted:
    """A stand-in value that knows its weight."""

    __slots__ = ("weight",)

    def __init__(self, weight: int) -> None:
        self.weight = weight


def weight_of(value: Weighted) -> int:
    """``getsizeof`` for caches holding ``Weighted`` values."""
    return value.weight


_MISS = object()


def replay(trace: Iterable[tuple[Hashable, int]], make_cache: Callable[[], Any]) -> tuple[float, float]:
    """Replay ``trace`` through a fresh ``make_cache()``; return (object hit ratio, byte hit ratio)."""
    cache = make_cache()
    get = cache.get
    explicit = getattr(cache, "set", None)
    n = hits = total_bytes = hit_bytes = 0
    for key, weight in trace:
        n += 1
        total_bytes += weight
        if get(key, _MISS) is not _MISS:
            hits += 1
            hit_bytes += weight
            continue
        try:
            if explicit is not None:
                explicit(key, Weighted(weight), weight=weight)
            else:
                cache[key] = Weighted(weight)
        except ValueError:
            pass  # heavier than the budget: not cacheable
    return (hits / n if n else 0.0, hit_bytes / total_bytes if total_bytes else 0.0)
