"""Replay a ``(key, weight)`` trace through libCacheSim (``pip install libcachesim``), an
independent C simulator, as a reference for our own policies.

The trace is written to a temporary libCacheSim ``oracleGeneral`` binary file (per request, packed
little-endian: uint32 time, uint64 object id, uint32 size, int64 next-access virtual time), which
carries the future knowledge that libCacheSim's Belady needs; libCacheSim's readers then replay it
in C (``cache.process_trace``).
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys
import tempfile
from typing import Hashable, Sequence

__all__ = ["POLICIES", "write_oracle_general", "OracleTrace"]

# name shown in the table -> (libcachesim class name, constructor kwargs)
POLICIES = {
    "LRU": ("LRU", {}),
    "W-TinyLFU": ("WTinyLFU", {}),  # libCacheSim's defaults: 1% window, SLRU main space
    "LIRS": ("LIRS", {}),
    "ARC": ("ARC", {}),
    "S3-FIFO": ("S3FIFO", {}),  # libCacheSim's defaults: 10% small FIFO, ghost 90%, promote at 2 hits
    "Belady": ("Belady", {}),
    "BeladySize": ("BeladySize", {}),
}

_RECORD = struct.Struct("<IQIq")


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 (C-level logging) for the duration."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def write_oracle_general(trace: Sequence[tuple[Hashable, int]], path: str) -> None:
    """Write ``trace`` as an oracleGeneral file; keys become dense integer ids starting at 1."""
    n = len(trace)
    ids: dict = {}
    nxt = [-1] * n
    last: dict = {}
    for i in range(n - 1, -1, -1):
        k = trace[i][0]
        nxt[i] = last.get(k, -1)
        last[k] = i
    with open(path, "wb") as f:
        buf = bytearray()
        for i, (k, w) in enumerate(trace):
            oid = ids.setdefault(k, len(ids) + 1)
            buf += _RECORD.pack(i, oid, w, nxt[i])
        f.write(buf)


class OracleTrace:
    """A trace written once to a temporary file and replayed through any number of policies."""

    def __init__(self, trace: Sequence[tuple[Hashable, int]]) -> None:
        import libcachesim as lcs

        self._lcs = lcs
        fd, self.path = tempfile.mkstemp(suffix=".oracleGeneral", prefix="bytecache-bench-")
        os.close(fd)
        write_oracle_general(trace, self.path)
        self.length = len(trace)
        self.hashpower = max(10, len({k for k, _ in trace}).bit_length() + 1)
        self.reader = lcs.TraceReader(self.path, lcs.TraceType.ORACLE_GENERAL_TRACE)

    def _cache(self, policy: str, cache_size: int):
        cls_name, kwargs = POLICIES[policy]
        # a hash table sized to the trace's keys: the default (2**24 buckets) costs more to allocate
        # than a short trace costs to replay
        return getattr(self._lcs, cls_name)(cache_size, hashpower=self.hashpower, **kwargs)

    def run(self, policy: str, cache_size: int) -> tuple[float, float]:
        """(object hit ratio, byte hit ratio) of libCacheSim ``policy`` (a key of POLICIES)."""
        cache = self._cache(policy, cache_size)
        with _quiet_stderr():  # libCacheSim logs "object size too large" from C for each refusal
            obj_miss, byte_miss = cache.process_trace(self.reader)
        return 1.0 - obj_miss, 1.0 - byte_miss

    def misses_per_chunk(self, policy: str, cache_size: int, chunk: int) -> list[int]:
        """Object misses of ``policy`` in each consecutive ``chunk`` requests of the trace, the cache
        carrying its state from one chunk to the next (e.g. misses per scheduler loop)."""
        cache = self._cache(policy, cache_size)
        out = []
        with _quiet_stderr():
            for start in range(0, self.length, chunk):
                length = min(chunk, self.length - start)
                obj_miss, _ = cache.process_trace(self.reader, start, length)
                out.append(round(obj_miss * length))
        return out

    def close(self) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def __enter__(self) -> "OracleTrace":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
