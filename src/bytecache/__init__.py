"""bytecache: a memory-bounded cache for long-running Python services.

Entries are weighed in bytes, expired by idle TTL first, then evicted to a byte budget by a
scan-resistant policy. Standard library only; ``bytecache.measure`` uses pympler when installed.
"""

from .cache import ByteCache, LoadFailedError
from .policies import DEFAULT_POLICY, POLICIES
from .sizes import format_size, parse_size
from .stats import CacheStats, EvictionCause

__all__ = [
    "ByteCache",
    "CacheStats",
    "EvictionCause",
    "LoadFailedError",
    "DEFAULT_POLICY",
    "POLICIES",
    "format_size",
    "parse_size",
]
__version__ = "0.1.0"
