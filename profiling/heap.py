"""What a process's allocators hold and what the OS charges it for: readings to take around an event.

The soak asks how much memory the scheduler's DAG cache really takes. The deep walk
(``profiling.cache_contents``) counts the objects; the two figures here count the memory, by
dropping the cache at exit and reading the process before and after (:func:`release`):

- **in use**: bytes the allocators have handed out and not taken back -- pymalloc's allocated
  blocks (objects up to 512 bytes; ``sys._debugmallocstats``) plus glibc malloc's
  ``mallinfo2()`` ``uordblks + hblkhd`` (larger objects, in its arenas and in its own mmaps).
  pymalloc takes its arenas with ``mmap``, not ``malloc``, so the two do not overlap. The drop in
  this figure is the cache's heap footprint, allocator rounding included, fragmentation not.
- **RSS / PSS** (``/proc/self/smaps_rollup``): what the OS charges the process. The drop in them,
  after ``malloc_trim(0)``, is what the process gives back; free blocks stranded in pages that
  still hold a live object (fragmentation) make it smaller than the heap figure.

Standard library only (``ctypes`` for glibc); each reading is None where its source is missing
(no pymalloc under ``PYTHONMALLOC=malloc``, no ``mallinfo2`` before glibc 2.33, no procfs).
"""

from __future__ import annotations

import ctypes
import gc
import os
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Callable

__all__ = ["HeapReading", "pymalloc_allocated_bytes", "parse_pymalloc_allocated", "malloc_in_use",
           "parse_smaps_rollup", "smaps_rollup", "read", "release"]

_ALLOCATED_BLOCKS = re.compile(r"^# bytes in allocated blocks\s*=\s*([\d,]+)\s*$", re.MULTILINE)


def parse_pymalloc_allocated(stats: str) -> int | None:
    """The ``# bytes in allocated blocks`` figure of a ``sys._debugmallocstats()`` dump (None if
    the dump has none: pymalloc is not the object allocator)."""
    match = _ALLOCATED_BLOCKS.search(stats)
    return int(match.group(1).replace(",", "")) if match else None


def pymalloc_allocated_bytes() -> int | None:
    """Bytes in pymalloc's allocated blocks now.

    ``sys._debugmallocstats()`` writes to the C library's stderr, not ``sys.stderr``, so file
    descriptor 2 is pointed at a temporary file while it runs (a line another thread logs to
    stderr in that instant lands there too, and is lost)."""
    if not hasattr(sys, "_debugmallocstats"):
        return None
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as dump:
        try:
            os.dup2(dump.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        dump.seek(0)
        return parse_pymalloc_allocated(dump.read().decode("ascii", "replace"))


class _Mallinfo2(ctypes.Structure):
    # glibc's struct mallinfo2 (2.33+): every field a size_t
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _find_mallinfo2() -> Callable[[], _Mallinfo2] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None).mallinfo2  # the C library the interpreter already links
    except (OSError, AttributeError):  # musl, or glibc before 2.33
        return None
    fn.argtypes = []
    fn.restype = _Mallinfo2
    return fn


_mallinfo2 = _find_mallinfo2()


def malloc_in_use() -> int | None:
    """Bytes glibc malloc has handed out and not taken back, over all its arenas: ``uordblks``
    (chunks in use in the arenas) + ``hblkhd`` (chunks it mmapped on their own). None without
    ``mallinfo2``."""
    if _mallinfo2 is None:
        return None
    info = _mallinfo2()
    return int(info.uordblks + info.hblkhd)


def parse_smaps_rollup(text: str) -> dict[str, int]:
    """``/proc/PID/smaps_rollup`` as bytes per field (``{"Rss": ..., "Pss": ..., ...}``)."""
    fields = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
            fields[name.strip()] = int(parts[0]) * 1024
    return fields


def smaps_rollup(pid: int | str = "self") -> dict[str, int]:
    """The process's memory as the kernel counts it (empty without procfs' ``smaps_rollup``)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return parse_smaps_rollup(f.read())
    except OSError:
        return {}


@dataclass(frozen=True)
class HeapReading:
    pymalloc: int | None  # bytes in pymalloc's allocated blocks
    malloc: int | None  # glibc malloc: bytes in use (uordblks + hblkhd)
    rss: int | None
    pss: int | None

    @property
    def in_use(self) -> int | None:
        """Bytes the allocators have handed out: pymalloc's blocks and malloc's chunks. Without
        pymalloc every object is malloc's; without mallinfo2 there is no total."""
        if self.malloc is None:
            return None
        return self.malloc + (self.pymalloc or 0)

    def to_dict(self) -> dict:
        return {**asdict(self), "in_use": self.in_use}


def read() -> HeapReading:
    kernel = smaps_rollup()
    return HeapReading(pymalloc_allocated_bytes(), malloc_in_use(), kernel.get("Rss"), kernel.get("Pss"))


def _less(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a - b


def release(drop: Callable[[], object], *, collect: Callable[[], object] = gc.collect,
            trim: Callable[[], object] | None = None) -> dict:
    """What ``drop()`` gives back: the process read after ``collect()`` (and ``trim()``), then
    ``drop()``, ``collect()`` and a reading (the allocators' figure: what the dropped objects
    held), then ``trim()`` and a reading (the kernel's: what the process gave back).

    ``trim`` is ``malloc_trim(0)`` or None (no trim). Returns the three readings and the
    differences: ``heap_released`` (in use, before less after collection), ``rss_released`` and
    ``pss_released`` (before less after the trim), and the milliseconds each step took."""
    collect()
    if trim is not None:
        trim()
    before = read()
    t0 = time.perf_counter()
    drop()
    collect()
    collect_ms = (time.perf_counter() - t0) * 1000.0
    collected = read()
    t1 = time.perf_counter()
    if trim is not None:
        trim()
    trim_ms = (time.perf_counter() - t1) * 1000.0
    trimmed = read()
    return {
        "before": before.to_dict(),
        "after_collect": collected.to_dict(),
        "after_trim": trimmed.to_dict(),
        "heap_released": _less(before.in_use, collected.in_use),
        "rss_released": _less(before.rss, trimmed.rss),
        "pss_released": _less(before.pss, trimmed.pss),
        "trimmed": trim is not None,
        "drop_and_collect_ms": collect_ms,
        "trim_ms": trim_ms,
    }
