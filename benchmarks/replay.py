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

``replay_hits`` gives the outcome of every request (for per-loop miss counts); ``hit_ratios``
turns such per-request outcomes into the two ratios. ``Ticks`` is a clock that the replay moves
one tick per request, for idle TTLs counted in requests.

Standard library only.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable, Sequence

__all__ = ["Weighted", "weight_of", "Ticks", "replay", "replay_hits", "hit_ratios"]

Trace = Sequence[tuple[Hashable, int]]


class Weighted:
    """A stand-in value that knows its weight."""

    __slots__ = ("weight",)

    def __init__(self, weight: int) -> None:
        self.weight = weight


def weight_of(value: Weighted) -> int:
    """``getsizeof`` for caches holding ``Weighted`` values."""
    return value.weight


class Ticks:
    """A cache ``timer`` that ``replay`` advances by one tick before each request it replays."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


_MISS = object()


def replay_hits(trace: Trace, make_cache: Callable[[], Any], *, ticks: Ticks | None = None) -> bytearray:
    """Replay ``trace`` through a fresh ``make_cache()``; byte ``i`` is 1 if request ``i`` hit.

    If ``ticks`` is given (the cache's timer), it moves one tick before every request."""
    cache = make_cache()
    get = cache.get
    explicit = getattr(cache, "set", None)
    hits = bytearray(len(trace))
    for i, (key, weight) in enumerate(trace):
        if ticks is not None:
            ticks.now += 1
        if get(key, _MISS) is not _MISS:
            hits[i] = 1
            continue
        try:
            if explicit is not None:
                explicit(key, Weighted(weight), weight=weight)
            else:
                cache[key] = Weighted(weight)
        except ValueError:
            pass  # heavier than the budget: not cacheable
    return hits


def hit_ratios(trace: Trace, hits: Sequence[int]) -> tuple[float, float]:
    """(object hit ratio, byte hit ratio) of ``trace`` given each request's outcome (1 = hit)."""
    n = len(trace)
    total_bytes = sum(w for _, w in trace)
    hit_bytes = sum(w for (_, w), hit in zip(trace, hits) if hit)
    return (sum(hits) / n if n else 0.0, hit_bytes / total_bytes if total_bytes else 0.0)


def replay(trace: Trace, make_cache: Callable[[], Any], *, ticks: Ticks | None = None) -> tuple[float, float]:
    """Replay ``trace`` through a fresh ``make_cache()``; return (object hit ratio, byte hit ratio)."""
    return hit_ratios(trace, replay_hits(trace, make_cache, ticks=ticks))
