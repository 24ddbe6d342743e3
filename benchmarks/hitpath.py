"""Hit-path cost of ``get`` on a warm key set, for several cache implementations.

Absolute nanoseconds on a shared machine are noise, so every implementation is timed in the same
rounds, in rotating order (interleaved), and the report uses the minimum and the median over rounds,
and ratios to one reference implementation measured in the same rounds.
"""

from __future__ import annotations

import gc
import statistics
import time
from typing import Callable

__all__ = ["make_loop", "measure"]


def make_loop(get: Callable, keys: list, lock=None) -> Callable[[int], None]:
    """A function running ``get(key)`` for every key, ``loops`` times (optionally under ``lock``)."""
    if lock is None:
        def run(loops: int) -> None:
            for _ in range(loops):
                for k in keys:
                    get(k)
    else:
        def run(loops: int) -> None:
            for _ in range(loops):
                for k in keys:
                    with lock:
                        get(k)
    return run


def measure(loops: dict[str, Callable[[int], None]], ops_per_loop: int, *, rounds: int = 15,
            loops_per_round: int = 20) -> dict[str, tuple[float, float]]:
    """{name: (min ns/op, median ns/op)} over ``rounds`` interleaved rounds."""
    names = list(loops)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for fn in loops.values():  # warm up
        fn(2)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            order = names[r % len(names):] + names[: r % len(names)]
            for name in order:
                fn = loops[name]
                t0 = time.perf_counter_ns()
                fn(loops_per_round)
                dt = time.perf_counter_ns() - t0
                samples[name].append(dt / (loops_per_round * ops_per_loop))
    finally:
        if gc_was_enabled:
            gc.enable()
    return {n: (min(s), statistics.median(s)) for n, s in samples.items()}
