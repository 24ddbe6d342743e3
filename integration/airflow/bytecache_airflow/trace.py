"""The scheduler's DAG-bag access trace: its format, a reader, and the working set it implies.

A trace is text, one line per record (gzip when the file name ends in ``.gz``):

``<dag_version_id> <weight> <t> <loop> <load_ms>``
    one lookup of the scheduler's bag: the version's weight (bytes, the bag's own), the time it
    returned (``time.monotonic()`` seconds, the bag's clock), the scheduler loop it belongs to
    (1 = the first ``_do_scheduling``), and how long it took in ms if it was a miss (it loaded the
    version: DB read, deserialization, weighing) or ``-`` if it hit.
``#loop <loop> <t> <working_set_bytes> <working_set_entries> <window>``
    the end of a scheduler loop, with the bag's working-set gauge at that moment (``-`` where the
    bag has none); the gauge's accuracy is checked against :func:`true_working_set`.

Traces recorded before the timestamps were added hold ``<dag_version_id> <weight>`` lines only;
they read as accesses with no time, loop or load time. ``profiling.bootstrap`` writes traces
(``BYTECACHE_PROFILE_TRACE``); the soak keeps its bytecache run's one.
"""

from __future__ import annotations

import gzip
import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, NamedTuple

__all__ = ["Access", "LoopMark", "Trace", "read_trace", "access_line", "loop_line", "true_working_set", "TruthSample", "quantile"]


class Access(NamedTuple):
    key: str
    weight: int
    t: float | None = None
    loop: int | None = None
    load_ms: float | None = None  # set on a miss


class LoopMark(NamedTuple):
    loop: int
    t: float
    working_set_bytes: int | None
    working_set_entries: int | None
    window: float | None


@dataclass(frozen=True)
class Trace:
    accesses: tuple[Access, ...]
    loops: tuple[LoopMark, ...]

    @property
    def timed(self) -> bool:
        return bool(self.accesses) and all(a.t is not None and a.loop is not None for a in self.accesses)

    def loop_count(self) -> int:
        """Scheduler loops the trace spans (loops without a lookup included)."""
        numbers = [a.loop for a in self.accesses if a.loop is not None] + [m.loop for m in self.loops]
        return max(numbers) - min(numbers) + 1 if numbers else 0

    def seconds(self) -> float:
        times = [a.t for a in self.accesses if a.t is not None] + [m.t for m in self.loops]
        return max(times) - min(times) if times else 0.0


def _opt(text: str, kind):
    return None if text == "-" else kind(text)


def access_line(key: str, weight: int, t: float, loop: int, load_ms: float | None) -> str:
    return f"{key} {weight} {t:.4f} {loop} {'-' if load_ms is None else f'{load_ms:.2f}'}\n"


def loop_line(loop: int, t: float, ws_bytes: int | None, ws_entries: int | None, window: float | None) -> str:
    fields = ["-" if v is None else str(v) for v in (ws_bytes, ws_entries)]
    return f"#loop {loop} {t:.4f} {' '.join(fields)} {'-' if window is None else f'{window:.3f}'}\n"


def read_trace(path: Path | str) -> Trace:
    """Read a trace (either format); a malformed line raises ValueError naming the file and line."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    accesses: list[Access] = []
    loops: list[LoopMark] = []
    with opener(path, "rt") as f:
        for number, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                if parts[0] == "#loop":
                    loop, t, ws_bytes, ws_entries, window = parts[1:6]
                    loops.append(LoopMark(int(loop), float(t), _opt(ws_bytes, int), _opt(ws_entries, int), _opt(window, float)))
                elif len(parts) == 2:
                    accesses.append(Access(parts[0], int(parts[1])))
                else:
                    key, weight, t, loop, load_ms = parts[:5]
                    accesses.append(Access(key, int(weight), float(t), int(loop), _opt(load_ms, float)))
            except ValueError:
                raise ValueError(f"{path}:{number}: not a trace line: {line.strip()[:80]!r}") from None
    return Trace(tuple(accesses), tuple(loops))


class TruthSample(NamedTuple):
    t: float
    bytes: int
    entries: int
    window: float | None


def true_working_set(
    accesses: Iterable[Access], at: Iterable[float], *, quantile: float = 0.95, samples: int = 4096, slack: float = 1.25
) -> list[TruthSample]:
    """The working set at each time in ``at``, from the trace alone, by the gauge's definition:
    the window is ``slack`` x the ``quantile`` of the last ``samples`` gaps between two reads of one
    version up to that time; the working set is the versions read within the window, each at the
    weight it was last recorded with. Written independently of ``bytecache.workingset`` (no
    pruning, no cap, every read of the trace) so that it can tell the gauge wrong."""
    timed = sorted((a for a in accesses if a.t is not None), key=lambda a: a.t)
    last: dict[str, tuple[float, int]] = {}
    gaps: deque[float] = deque(maxlen=samples)
    out = []
    i = 0
    for when in sorted(at):
        while i < len(timed) and timed[i].t <= when:
            a = timed[i]
            seen = last.get(a.key)
            if seen is not None and a.t > seen[0]:
                gaps.append(a.t - seen[0])
            last[a.key] = (a.t, a.weight)
            i += 1
        if not gaps:
            out.append(TruthSample(when, sum(w for _, w in last.values()), len(last), None))
            continue
        ordered = sorted(gaps)
        window = slack * ordered[min(len(ordered) - 1, math.ceil(quantile * len(ordered)) - 1)]
        inside = [w for t, w in last.values() if t >= when - window]
        out.append(TruthSample(when, sum(inside), len(inside), window))
    return out


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

