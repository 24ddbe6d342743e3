"""The allocator and kernel readings the soak's real-memory figure is made of, on real allocations:
megabytes of objects made and dropped in this process, each reading checked against what was
allocated (the walker's count of the objects)."""

from __future__ import annotations

import gc
import sys

import pytest

from bytecache.measure import walk_sizeof
from bytecache_airflow.reclaim import malloc_trim

from profiling import heap
from profiling.soak.report import release_figures
from profiling.units import MiB

linux_glibc = pytest.mark.skipif(heap.malloc_in_use() is None or not heap.smaps_rollup(),
                                 reason="needs glibc's mallinfo2 and /proc/self/smaps_rollup")


def small_objects(mib: int) -> list:
    """About ``mib`` MiB of pymalloc-sized objects (lists of floats: every block under 512 bytes)."""
    return [[float(i), float(-i)] for i in range(mib * MiB // 152)]


def large_objects(mib: int) -> list:
    """About ``mib`` MiB in blocks over pymalloc's 512-byte limit: malloc's, half of them mmapped."""
    return [bytearray(64 * 1024 if i % 2 else 300 * 1024) for i in range(mib * MiB // (182 * 1024))]


def test_parse_the_allocated_blocks_line_of_a_real_dump():
    dump = "# arenas allocated total           =                  123\n# bytes in allocated blocks        =           12,345,678\n"
    assert heap.parse_pymalloc_allocated(dump) == 12_345_678
    assert heap.parse_pymalloc_allocated("Small block threshold = 512, in 32 size classes.\n") is None
    assert heap.pymalloc_allocated_bytes() > 0  # this interpreter's own dump parses


def test_parse_smaps_rollup_in_bytes():
    text = ("55d0c0000000-7ffd00000000 ---p 00000000 00:00 0    [rollup]\n"
            "Rss:              148328 kB\nPss:              101205 kB\nPss_Anon:          90000 kB\n")
    assert heap.parse_smaps_rollup(text) == {"Rss": 148328 * 1024, "Pss": 101205 * 1024, "Pss_Anon": 90000 * 1024}


@pytest.mark.parametrize("reading, make", [
    (heap.pymalloc_allocated_bytes, small_objects),
    pytest.param(heap.malloc_in_use, large_objects, marks=linux_glibc),
], ids=["pymalloc-small-objects", "malloc-large-objects"])
def test_a_reading_sees_its_allocators_objects_come_and_go(reading, make):
    gc.collect()
    before = reading()
    objects = make(40)
    made = walk_sizeof(objects) - -(-sys.getsizeof(objects) // 16) * 16  # less the list holding them
    during = reading()
    del objects
    after = reading()
    assert during - before == pytest.approx(made, rel=0.02)
    assert abs(after - before) < 0.02 * made


@linux_glibc
def test_malloc_reading_counts_chunks_it_mmapped_on_their_own():
    before = heap.malloc_in_use()
    huge = bytearray(48 * MiB)  # over glibc's largest mmap threshold (32 MiB): never in an arena
    during = heap.malloc_in_use()
    del huge
    assert during - before == pytest.approx(48 * MiB, rel=0.01)
    assert abs(heap.malloc_in_use() - before) < 1 * MiB


@linux_glibc
def test_release_measures_what_the_drop_gave_back():
    box = {"small": small_objects(30), "large": large_objects(30)}
    box["cycle"] = box  # cyclic: only the collection after the drop frees it
    made = walk_sizeof(box)
    result = heap.release(box.clear, trim=malloc_trim)
    assert result["heap_released"] == pytest.approx(made, rel=0.03)
    assert result["before"]["in_use"] - result["after_collect"]["in_use"] == result["heap_released"]
    # what the kernel gets back depends on what else lives in the same pages (in a process that
    # ran other tests first, small objects fill the free blocks of arenas it still uses): some
    assert 0 < result["rss_released"] < 1.1 * made


@linux_glibc
def test_release_gives_the_pages_of_a_chunk_malloc_mmapped_back_to_the_os():
    box = {"huge": bytearray(48 * MiB)}  # over glibc's largest mmap threshold: its own mapping
    box["huge"][::4096] = b"\x01" * len(range(0, 48 * MiB, 4096))  # every page touched: in RSS
    result = heap.release(box.clear, trim=malloc_trim)
    assert result["heap_released"] == pytest.approx(48 * MiB, rel=0.01)
    assert result["rss_released"] == pytest.approx(48 * MiB, rel=0.05)
    assert result["pss_released"] == pytest.approx(48 * MiB, rel=0.05)  # private pages: PSS is RSS


@linux_glibc
def test_release_of_nothing_gives_back_nothing():
    kept = small_objects(20)
    result = heap.release(lambda: None, trim=malloc_trim)
    assert abs(result["heap_released"]) < 1 * MiB
    assert len(kept) > 0


def test_release_figures_against_the_gauge_at_the_drop_and_what_survived_it():
    release = {"gauge": 100 * MiB, "walk_bytes": 95 * MiB, "heap_released": 90 * MiB, "pss_released": 80 * MiB, "rss_released": 85 * MiB,
               "before": {"pymalloc": 150 * MiB, "malloc": 50 * MiB}, "after_collect": {"pymalloc": 90 * MiB, "malloc": 20 * MiB},
               "survivors": [{"dag_version_id": "a", "walk_bytes": 7 * MiB}]}
    figs = release_figures(release)
    assert figs["err_heap"] == pytest.approx(100 / 90 - 1) and figs["err_pss"] == pytest.approx(100 / 80 - 1)
    assert (figs["pymalloc_released"], figs["malloc_released"]) == (60 * MiB, 30 * MiB)
    assert figs["survivors"] == 1 and figs["survivor_walk"] == 7 * MiB and figs["drop_gauge"] == 100 * MiB and figs["drop_walk"] == 95 * MiB
    none = release_figures(None)
    assert none["heap_released"] is None and none["err_heap"] is None and none["survivors"] is None
