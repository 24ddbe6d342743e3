"""What the cache reports: counters as a plain frozen record, and why an entry left."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["CacheStats", "EvictionCause"]


class EvictionCause(enum.Enum):
    EXPIRED = "expired"  # idle longer than the TTL
    SIZE = "size"  # chosen by the policy to bring the cache back within maxsize
    REPLACED = "replaced"  # a new value was stored under the same key
    EXPLICIT = "explicit"  # deleted, popped or cleared by the caller


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    hit_ratio: float
    loads: int
    load_failures: int
    evictions_expired: int
    evictions_size: int
    rejections: int
    currsize: int
    maxsize: int | None
    entries: int
    callback_errors: int = 0  # on_evict calls that raised (logged to the "bytecache" logger)
