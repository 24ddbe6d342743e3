"""Evicted is not freed: account for evicted-but-uncollected bytes and reclaim them.

A deserialized ``SerializedDAG`` is one large reference cycle (operators <-> DAG <-> task group),
so dropping it from the cache frees nothing until a full (generation 2) cyclic collection. In a
scheduler with many long-lived objects those are rare, so between them the process can hold far
more DAG memory than the cache admits to. :class:`Reclaimer` keeps a running total of the bytes
evicted since the last full collection (whoever ran it: the collector's generation-2 count says)
and runs ``gc.collect()`` itself when that total passes a fraction of the budget:

* ``soft_fraction`` of the budget, at most once per ``min_interval`` seconds, and only while the
  time-share cap leaves room for one more collection after it;
* ``hard_fraction`` of the budget, at most once per ``hard_min_interval`` seconds;

and in either case only while its collections so far (plus one more like the last, half as long
again) stay within ``max_time_share`` of the time since it started. A collection holds the GIL
for its whole length (~0.1-1 s in a scheduler), stalling every thread, so where it runs matters: never on a lookup,
always from the bag's maintenance step, which skips while the scheduler is inside its critical
section. With the caps, live + uncollected bytes normally stay within ``budget * (1 +
hard_fraction)`` plus what one maintenance tick evicts -- 1.25 × the budget with the defaults,
the bound the soak judges; when evictions outrun the caps the excess waits for the next allowed
collection (or Python's own full collection, which frees the same bytes). :meth:`Reclaimer.observe`
records how close it came: the peak of live + uncollected bytes and, per maintenance tick, how
many times the budget they held.

Collected is not returned either: glibc keeps freed blocks (everything over pymalloc's 512-byte
limit: task dicts, long strings) inside its heap, and only ever gives back the top of it. After a
full collection -- ours, or one of the collector's own, at most once per ``trim_interval``
seconds -- :meth:`Reclaimer.maybe_trim` calls ``malloc_trim(0)`` so the freed pages leave RSS
(measured: 20-45 ms on a 300-670 MB heap). Without glibc there is nothing to call and it is a no-op.

With a :class:`~bytecache_airflow.freezing.HeapFreezer` (``[scheduler] dag_cache_gc_freeze =
True``) each collection is ``gc.unfreeze(); gc.collect(); gc.freeze()``: the cached DAGs leave
the automatic collector's work. An evicted DAG that was frozen is then freed only by the next such
collection, so its bytes are counted apart (``frozen_uncollected``: Python's own full
collections do not reset them) and the triggers above act on both counts together. When the
caps defer a due collection, Python's collections no longer free those bytes meanwhile: what one
refreeze froze is at most the budget, so live + uncollected can reach 2 × the budget instead of
the 1.25 × the triggers aim at (the trade-off for the collector's time; see the Airflow README).
Besides, a refreeze is wanted (as a soft trigger: ``min_interval`` and the
caps apply) when it never ran, when someone else's ``gc.unfreeze()`` undid it, when it is
``max_age`` old, or when the cached bytes loaded since it reach ``soft_fraction`` of the budget.
Between its collections it also freezes right after Python's own full collections
(:meth:`Reclaimer.maybe_follow`) while the frozen entries it evicts are few enough to wait for
the next one it may run.
"""

from __future__ import annotations

import collections
import ctypes
import gc
import mmap
import sys
import threading
import time
from collections.abc import Callable

from bytecache import forksafe

from bytecache_airflow.freezing import FreezeWatch, HeapFreezer

__all__ = ["Reclaimer", "malloc_trim", "percentile", "resident_pause_prior_ms"]

#: The window, in seconds, of the eviction rate that decides whether to follow a full collection.
EVICTION_RATE_WINDOW = 60.0
#: Collection pauses kept for the distribution (the most recent ones).
PAUSES_KEPT = 4096
#: Upper edges of the buckets of live + uncollected bytes per budget counted at each maintenance
#: tick (the last bucket is everything above 2 × the budget).
HELD_RATIO_EDGES = (1.0, 1.1, 1.25, 1.5, 2.0)


def _find_malloc_trim() -> Callable[[], object] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None).malloc_trim  # the C library the interpreter already links
    except (OSError, AttributeError):  # musl and others have no malloc_trim
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return lambda: fn(0)


#: ``malloc_trim(0)`` of the running C library, or None where it has none.
malloc_trim = _find_malloc_trim()

#: What the first collection is assumed to cost per MiB of the process's resident memory, before
#: any was timed. The first collection of each soak in profiling/results paused 1.1-8.6 ms per MiB
#: of the scheduler's peak RSS (2 shared cores, load 11-27; later ones up to 16.8): above all of
#: them, so that no run -- however short -- spends more than its share on the first one. The cost:
#: a 300 MiB scheduler's first collection waits until it has run 300 s.
FIRST_PAUSE_MS_PER_MIB = 10.0
#: What the next pause may be, as a multiple of the last one, for the time-share cap: on a loaded
#: machine consecutive pauses differ (2.2 s then 3.2 s in one 8-minute soak at load 10), and the cap
#: judged against the last one alone let that run spend 1.13% of its wall time on collections.
PAUSE_GROWTH = 1.5
_PAGE_SIZE = mmap.PAGESIZE


def resident_pause_prior_ms() -> float:
    """The pause a first full collection is expected to take: ``FIRST_PAUSE_MS_PER_MIB`` per MiB of
    resident memory (``/proc/self/statm``; 0 where there is none, as before: the first collection
    then runs once due)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            resident_pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return resident_pages * _PAGE_SIZE / 2**20 * FIRST_PAUSE_MS_PER_MIB


def _full_collections() -> int:
    """Generation-2 collections this process has run so far, whoever ran them."""
    return gc.get_stats()[2]["collections"]


class Reclaimer:
    """Tracks bytes evicted since the last full collection and collects when they pile up.

    Not on anyone's lookup path: the bag calls :meth:`maybe_collect` from its maintenance step
    (a daemon thread, at a point where the scheduler is outside its critical section). Whatever
    the budget, its own collections are capped at one per ``hard_min_interval`` seconds and at
    ``max_time_share`` of the time since it was created (counted with the same ``timer``), so a
    small budget on a large heap cannot turn into back-to-back collections.
    """

    def __init__(
        self,
        budget: Callable[[], int],
        *,
        soft_fraction: float = 0.1,
        hard_fraction: float = 0.2,
        min_interval: float = 30.0,
        hard_min_interval: float = 10.0,
        max_time_share: float = 0.01,
        timer: Callable[[], float] = time.monotonic,
        on_collect: Callable[[float, int], None] | None = None,
        on_trim: Callable[[float], None] | None = None,
        collect: Callable[[], object] = gc.collect,
        trim: Callable[[], object] | None = malloc_trim,
        trim_interval: float = 10.0,
        freezer: HeapFreezer | None = None,
        cpu_timer: Callable[[], float] = time.thread_time,
        first_pause_ms: Callable[[], float] = resident_pause_prior_ms,
    ) -> None:
        if not 0 < soft_fraction <= hard_fraction:
            raise ValueError(f"need 0 < soft_fraction <= hard_fraction, got {soft_fraction}, {hard_fraction}")
        if min_interval < 0:
            raise ValueError(f"min_interval must be >= 0, got {min_interval}")
        if hard_min_interval < 0:
            raise ValueError(f"hard_min_interval must be >= 0, got {hard_min_interval}")
        if not 0 < max_time_share <= 1:
            raise ValueError(f"max_time_share must be in (0, 1], got {max_time_share}")
        if trim_interval < 0:
            raise ValueError(f"trim_interval must be >= 0, got {trim_interval}")
        self._budget = budget
        self.soft_fraction = soft_fraction
        self.hard_fraction = hard_fraction
        self.min_interval = min_interval
        self.hard_min_interval = hard_min_interval
        self.max_time_share = max_time_share
        self._timer = timer
        self._cpu_timer = cpu_timer  # the running thread's CPU time: what a trim costs (it releases the GIL)
        self._first_pause_ms = first_pause_ms  # what the time-share cap expects of a collection before one was timed
        self._on_collect = on_collect
        self._on_trim = on_trim  # every trim, whether after our collection or after Python's
        self._freezer = freezer
        self._collect = freezer.collect if freezer is not None else collect
        # whether someone else's gc.freeze() is in progress: ours knows what it froze itself
        self._foreign_freeze = freezer.foreign_freeze if freezer is not None else FreezeWatch(timer).in_progress
        self._lock = threading.Lock()
        forksafe.register(self, "_lock", after_in_child=Reclaimer._after_fork_in_child)
        self._collecting = False
        self.uncollected = 0  # bytes evicted since the last full collection, not frozen
        self.frozen_uncollected = 0  # bytes evicted since our last collection that were frozen
        self.unfrozen_live = 0  # cached bytes loaded since the last refreeze (the bag says)
        self.collections = 0  # collections this reclaimer ran
        self.evicted_total = 0  # bytes evicted since the start, frozen or not
        self._evicted_samples: collections.deque[tuple[float, int]] = collections.deque()
        self.follows_declined = 0  # full collections of Python's not followed: the churn would overrun
        self.total_ms = 0.0  # wall time: a collection holds the GIL, every thread waits it out
        self.collection_cpu_seconds = 0.0  # the same collections in the collecting thread's CPU time
        self.last_ms: float | None = None
        self.pauses_ms: collections.deque[float] = collections.deque(maxlen=PAUSES_KEPT)
        self.deferred_for_time = 0  # due, but the interval or time-share cap said wait
        self.full_collections_seen = 0  # any generation-2 collection, ours or not
        self._full_count = self._followed_count = _full_collections()
        self._started = self._last_collect = timer()
        self._trim = trim
        self.trim_interval = trim_interval
        self.trims = 0
        self.trim_ms = 0.0
        self.trim_cpu_seconds = 0.0
        self._trimmed_at = self._full_count  # the full-collection count at the last trim
        self._last_trim = self._started
        self.held_peak_bytes = 0  # live + uncollected, the most seen by observe()
        self.held_peak_budget = 0  # the budget at that moment
        self.held_ticks = [0] * (len(HELD_RATIO_EDGES) + 1)  # ticks by live + uncollected per budget

    def _after_fork_in_child(self) -> None:
        self._collecting = False  # a collection in another thread of the parent does not go on here

    @property
    def freezer(self) -> HeapFreezer | None:
        return self._freezer

    @property
    def pending(self) -> int:
        """Evicted bytes that still wait for a collection: frozen or not."""
        return self.uncollected + self.frozen_uncollected

    def refresh(self) -> int:
        """Forget what a full collection (anyone's) has freed since we last looked; return the rest."""
        with self._lock:
            self._notice_other_collections()
            return self.pending

    def _notice_other_collections(self) -> None:
        # Polled rather than hooked into gc.callbacks: a signal handler that runs inside a gc
        # callback cannot raise (SystemExit there is printed and dropped), so a hook would let
        # SIGTERM be lost if it arrived during a collection. Frozen bytes are not theirs to free.
        count = _full_collections()
        if count != self._full_count:
            self.full_collections_seen += count - self._full_count
            self._full_count = count
            self.uncollected = 0

    def add(self, nbytes: int, *, frozen: bool = False, freeze_epoch: int | None = None) -> None:
        """``nbytes`` of cached objects were dropped and await a full collection (ours only, if
        ``frozen``, or if they were loaded in ``freeze_epoch`` and the freezer has frozen since:
        judged under the lock a follow takes, so that a follow cannot slip in between)."""
        with self._lock:
            self._notice_other_collections()
            self.evicted_total += nbytes
            if freeze_epoch is not None and self._freezer is not None:
                frozen = freeze_epoch < self._freezer.epoch
            if frozen:
                self.frozen_uncollected += nbytes
            else:
                self.uncollected += nbytes

    def observe(self, live_bytes: int, *, tick: bool = False) -> int:
        """Note ``live_bytes`` cached now: keep the peak of live + uncollected, and with ``tick``
        (once per maintenance step) count the step in its bucket of that sum per budget. Returns
        the sum. Cheap enough for a miss (a lock and the collector's counters), not for a hit."""
        with self._lock:
            self._notice_other_collections()
            held = live_bytes + self.pending
        budget = max(int(self._budget()), 1)
        if held > self.held_peak_bytes:
            self.held_peak_bytes, self.held_peak_budget = held, budget
        if tick:
            ratio = held / budget
            self.held_ticks[next((i for i, edge in enumerate(HELD_RATIO_EDGES) if ratio <= edge), len(HELD_RATIO_EDGES))] += 1
        return held

    def _hard_bytes(self) -> float:
        """The hard trigger's threshold: ``hard_fraction`` of the budget."""
        return self.hard_fraction * max(int(self._budget()), 1)

    def _hard_due(self) -> bool:
        return self.pending >= self._hard_bytes()

    def wanted(self) -> bool:
        """Whether enough evicted bytes wait for a collection, or a refreeze is due (the caps aside)."""
        if self._hard_due():
            return True
        if self._timer() - self._last_collect < self.min_interval:
            return False
        soft = self.soft_fraction * max(int(self._budget()), 1)
        if self.pending >= soft:
            return True
        return self._freezer is not None and (self.unfrozen_live >= soft or self._freezer.refreeze_due())

    def _expected_pause_ms(self, *, hard: bool) -> float:
        """What the time-share cap reserves for the next collection: the first-pause estimate
        before any was timed; else the last pause, ``PAUSE_GROWTH`` times as long, twice over for a
        soft collection (one more kept in reserve for the hard trigger)."""
        if self.last_ms is None:
            return self._first_pause_ms()
        return self.last_ms * PAUSE_GROWTH * (1 if hard else 2)

    def seconds_until_allowed(self) -> float:
        """How long until :meth:`allowed` turns true for a hard collection, if nothing else changes."""
        now = self._timer()
        expected_ms = self._expected_pause_ms(hard=True)
        by_interval = self.hard_min_interval - (now - self._last_collect)
        by_share = (self.total_ms + expected_ms) / 1000.0 / self.max_time_share - (now - self._started)
        return max(0.0, by_interval, by_share)

    def eviction_rate(self) -> float | None:
        """Bytes evicted per second over the last ``EVICTION_RATE_WINDOW`` seconds: None until the
        calls have spanned that long since our first refreeze (a cache still filling up evicts
        nothing at all, and before that collection its pause is only the first-pause estimate)."""
        if self._freezer is None or not self._freezer.refreezes:
            return None
        now = self._timer()
        samples = self._evicted_samples
        samples.append((now, self.evicted_total))
        while len(samples) > 2 and now - samples[1][0] >= EVICTION_RATE_WINDOW:
            samples.popleft()
        then, evicted_then = samples[0]
        if now - then < EVICTION_RATE_WINDOW:
            return None
        return (self.evicted_total - evicted_then) / (now - then)

    def allowed(self) -> bool:
        """Whether the caps let a collection run now: one per ``hard_min_interval`` seconds, and
        the collections so far plus one more like the last (``PAUSE_GROWTH`` times as long)
        within ``max_time_share`` of the time.
        A soft collection also leaves one more in reserve: the share it would spend is what lets
        the hard trigger act in a burst of evictions. Before the first collection "one like the
        last" is the ``first_pause_ms`` estimate: counted as free, the first one overran the share
        in every run shorter than about a hundred pauses (1.12% of an 8-minute soak)."""
        now = self._timer()
        if now - self._last_collect < self.hard_min_interval:
            return False
        expected_ms = self._expected_pause_ms(hard=self._hard_due())
        return (self.total_ms + expected_ms) / 1000.0 <= self.max_time_share * (now - self._started)

    def due(self) -> bool:
        return self.wanted() and self.allowed()

    def maybe_collect(self) -> float | None:
        """Collect if due; return the collection's wall time in ms, or None. Call with no locks held."""
        with self._lock:
            self._notice_other_collections()
        if not self.wanted():
            return None
        if not self.allowed():
            self.deferred_for_time += 1
            return None
        if self._foreign_freeze():
            # Between gc.freeze() and gc.unfreeze() (LocalExecutor around its forks) the evicted
            # DAGs sit in the permanent generation: a collection would free none of them (and a
            # refreeze would unfreeze what the fork's copy-on-write wants frozen). Judged against
            # a baseline, not zero: Python 3.12+ always has immortal objects frozen (this check
            # against zero stopped every collection there), and a freeze that lasts is an
            # application's own, which must not stop reclaim for good.
            return None
        with self._lock:
            if self._collecting:
                return None
            self._collecting = True
        try:
            freed_estimate = self.pending
            start, cpu_start = self._timer(), self._cpu_timer()
            self._collect()
            ms = (self._timer() - start) * 1000.0
            self.collection_cpu_seconds += self._cpu_timer() - cpu_start
        finally:
            with self._lock:
                self._collecting = False
        with self._lock:
            self.uncollected = self.frozen_uncollected = self.unfrozen_live = 0
            self._full_count = self._followed_count = _full_collections()
        self._last_collect = self._timer()
        self.collections += 1
        self.total_ms += ms
        self.last_ms = ms
        self.pauses_ms.append(ms)
        self._trim_now()  # timed on its own (trims, trim_ms), not as part of the collection
        if self._on_collect is not None:
            self._on_collect(ms, freed_estimate)
        return ms

    def maybe_follow(self) -> bool:
        """With a freezer: freeze the survivors of a full collection Python has run since we last
        looked (:meth:`HeapFreezer.follow`), so that its next ones walk only what is new. Not
        during someone else's freeze, and not when the frozen evicted bytes -- those waiting now,
        plus what the recent eviction rate adds until the caps allow our next collection -- would
        reach ``hard_fraction`` of the budget: the cache churns faster than our collections may
        run, and Python's collections must go on freeing what it evicts. Only right after the
        collection (the next maintenance step): later, what died since would be frozen too.
        Returns whether it froze."""
        if self._freezer is None:
            return False
        rate = self.eviction_rate()  # sampled every step, so that the window is current when it matters
        with self._lock:
            self._notice_other_collections()
            if self._full_count == self._followed_count:
                return False
            # this collection is followed now or never: later, what died since would be frozen too
            self._followed_count = self._full_count
            # Everything cached is frozen by a follow -- the entries about to be evicted too:
            # what is evicted until our next collection is allowed stays in memory until then.
            # Follow only if that fits in the hard fraction, at the recent eviction rate. Not
            # before our first refreeze and a window after it: the first soak to follow froze a
            # whole 133 MiB cache in its first minute (still filling up, it evicted nothing),
            # then the superseded versions it dropped waited as frozen garbage for our first
            # collection, minutes later.
            if rate is None or self.pending + rate * self.seconds_until_allowed() >= self._hard_bytes():
                self.follows_declined += 1
                return False
        self._freezer.undone()  # an unfreeze by someone else since our last freeze is counted before it is covered
        if self._foreign_freeze():
            return False
        with self._lock:
            self._notice_other_collections()
            self._freezer.follow()
            self._followed_count = self._full_count
            # evicted since that collection: frozen now, so only our collection frees them
            self.frozen_uncollected += self.uncollected
            self.uncollected = self.unfrozen_live = 0
        return True

    def maybe_trim(self) -> float | None:
        """Return freed heap to the OS if a full collection ran since the last trim and
        ``trim_interval`` has passed; the trim's wall time in ms, or None. Call with no locks held."""
        if self._trim is None or _full_collections() == self._trimmed_at:
            return None
        if self._timer() - self._last_trim < self.trim_interval:
            return None
        return self._trim_now()

    def _trim_now(self) -> float | None:
        if self._trim is None:
            return None
        self._trimmed_at = _full_collections()
        start, cpu_start = self._timer(), self._cpu_timer()
        self._trim()
        ms = (self._timer() - start) * 1000.0
        self.trim_cpu_seconds += self._cpu_timer() - cpu_start
        if self._on_trim is not None:
            self._on_trim(ms)
        self._last_trim = self._timer()
        self.trims += 1
        self.trim_ms += ms
        return ms

    def state(self) -> dict:
        """JSON-able counters: collections and their pauses, trims."""
        pauses = sorted(self.pauses_ms)
        return {
            "collections": self.collections,
            "collection_seconds": self.total_ms / 1000.0,
            "pauses_ms": list(self.pauses_ms),
            "pause_p50_ms": percentile(pauses, 50),
            "pause_p99_ms": percentile(pauses, 99),
            "pause_max_ms": pauses[-1] if pauses else None,
            "trims": self.trims,
            "trim_seconds": self.trim_ms / 1000.0,
            "trim_cpu_seconds": self.trim_cpu_seconds,
            "uncollected_bytes": self.pending,
            "frozen_uncollected_bytes": self.frozen_uncollected,
            "full_collections_seen": self.full_collections_seen,
            "deferred_for_time": self.deferred_for_time,
            "follows_declined": self.follows_declined,
            "soft_fraction": self.soft_fraction,
            "hard_fraction": self.hard_fraction,
            "held_peak_bytes": self.held_peak_bytes,
            "held_peak_budget": self.held_peak_budget,
            "held_ticks_by_ratio": dict(zip([*map(str, HELD_RATIO_EDGES), "inf"], self.held_ticks)),
            **(self._freezer.state() if self._freezer is not None else {"gc_freeze": False}),
        }


    def pause_gauges(self) -> dict[str, int]:
        """Collections run and the p50/p99/max of their pauses in ms (0 before the first)."""
        pauses = sorted(self.pauses_ms)
        return {
            "cache_reclaim_pause_p50_ms": round(percentile(pauses, 50) or 0),
            "cache_reclaim_pause_p99_ms": round(percentile(pauses, 99) or 0),
            "cache_reclaim_pause_max_ms": round(pauses[-1]) if pauses else 0,
        }


def percentile(sorted_values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of an ascending list, or None if it is empty."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * pct // 100))  # ceil
    return sorted_values[int(rank) - 1]
