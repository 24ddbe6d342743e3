"""The reclaimer: when it collects (triggers and caps, on an injected clock), what it records, and
the heap trim after a full collection (rate-limited, a no-op without glibc)."""

from __future__ import annotations

import gc

import airflow_helpers as helpers
import pytest

from bytecache_airflow.freezing import PERMANENT_FREEZE_AFTER
from bytecache_airflow.reclaim import EVICTION_RATE_WINDOW, FIRST_PAUSE_MS_PER_MIB, Reclaimer, malloc_trim, percentile, resident_pause_prior_ms


def NO_PRIOR() -> float:
    """The first collection counted as free, as the caps' own tests assume (the estimate from
    resident memory has its own tests below)."""
    return 0.0


def make_reclaimer(clock, trims=None, *, pause=0.0, trim_cost=0.0, budget=1000, **kwargs):
    """A reclaimer on ``clock`` whose collection takes ``pause`` and trim ``trim_cost`` seconds of it."""
    trims = [] if trims is None else trims

    def collect():
        gc.collect()
        clock.advance(pause)

    def trim():
        trims.append(clock())
        clock.advance(trim_cost)

    kwargs.setdefault("trim_interval", 10.0)
    kwargs.setdefault("first_pause_ms", NO_PRIOR)
    return Reclaimer(lambda: budget, timer=clock, collect=collect, trim=trim, **kwargs)


def test_trims_only_after_a_full_collection_and_at_most_every_interval():
    clock, trims = helpers.FakeClock(), []
    rc = make_reclaimer(clock, trims, trim_cost=0.03)
    t0 = clock()
    clock.advance(60)
    assert rc.maybe_trim() is None and trims == []  # nothing was collected: nothing to give back
    gc.collect()
    assert rc.maybe_trim() == pytest.approx(30.0) and trims == [t0 + 60]
    assert rc.maybe_trim() is None  # no collection since
    gc.collect()
    clock.advance(5)
    assert rc.maybe_trim() is None  # within the interval (counted from the end of the last trim)
    clock.advance(5)
    assert rc.maybe_trim() == pytest.approx(30.0) and trims == [t0 + 60, t0 + 70.03]
    assert rc.trims == 2 and rc.trim_ms == pytest.approx(60.0)
    assert rc.state()["trim_seconds"] == pytest.approx(0.06)


def test_own_collection_trims_at_once_and_is_timed_apart_from_it():
    clock, trims = helpers.FakeClock(), []
    rc = make_reclaimer(clock, trims, pause=0.2, trim_cost=0.04, soft_fraction=0.5, hard_fraction=0.5, trim_interval=3600)
    clock.advance(100)
    rc.add(600)  # past the hard fraction of the 1000-byte budget
    assert rc.maybe_collect() == pytest.approx(200.0)
    assert rc.collections == 1 and rc.uncollected == 0
    assert rc.total_ms == pytest.approx(200.0) and rc.trims == 1 and rc.trim_ms == pytest.approx(40.0)


def test_hard_trigger_collects_at_most_once_per_hard_min_interval():
    clock = helpers.FakeClock()
    rc = make_reclaimer(clock, soft_fraction=0.5, hard_fraction=0.5, min_interval=1e9, hard_min_interval=10.0,
                        max_time_share=1.0)
    collected_at = []
    for _ in range(100):  # a budget's worth evicted every second: the hard trigger is always due
        clock.advance(1.0)
        rc.add(1000)
        if rc.maybe_collect() is not None:
            collected_at.append(clock())
    gaps = [b - a for a, b in zip(collected_at, collected_at[1:])]
    assert len(collected_at) == 10 and min(gaps) >= 10.0
    assert rc.deferred_for_time == 90


def test_collections_stay_within_their_time_share_whatever_the_budget():
    clock = helpers.FakeClock()
    # every collection pauses 0.5 s; evictions always exceed the hard fraction
    rc = make_reclaimer(clock, pause=0.5, hard_min_interval=0.0, max_time_share=0.01)
    for _ in range(3600):
        clock.advance(1.0)
        rc.add(1000)
        rc.maybe_collect()
    elapsed = 3600 + rc.total_ms / 1000.0
    assert rc.total_ms / 1000.0 <= 0.01 * elapsed
    assert rc.collections >= 60  # and the cap is not a ban: ~1% of an hour of 0.5 s pauses is 72
    assert rc.state()["pause_p50_ms"] == pytest.approx(500.0) and rc.state()["pause_max_ms"] == pytest.approx(500.0)


def test_the_first_collection_waits_until_its_estimated_pause_fits_the_time_share():
    """Before any collection was timed, the cap expects one of ``first_pause_ms``: a run shorter
    than a hundred pauses never overspends its 1% (the first used to count as free: 1.12% of an
    8-minute soak)."""
    clock = helpers.FakeClock()
    rc = make_reclaimer(clock, pause=2.0, hard_min_interval=10.0, max_time_share=0.01, first_pause_ms=lambda: 2000.0)
    start, collected_at = clock(), []
    for _ in range(600):  # evictions past the hard trigger every second, for ten minutes
        clock.advance(1.0)
        rc.add(1000)
        if rc.maybe_collect() is not None:
            collected_at.append(clock() - start)
        assert rc.total_ms / 1000.0 <= 0.01 * (clock() - start)  # at every moment, not only at the end
    assert collected_at[0] >= 200.0  # 2 s is 1% of 200 s
    # the second waits for room for a pause 1.5 x the last: 2 + 3 s is 1% of 500 s
    assert collected_at[1] >= 500.0
    assert rc.deferred_for_time >= 190 and len(collected_at) == 2


def test_pauses_that_grow_from_one_collection_to_the_next_stay_within_the_time_share():
    """On a loaded machine the next pause is often longer than the last (2.2 s then 3.2 s in one
    soak): the cap leaves room for one half as long again."""
    clock = helpers.FakeClock()
    pauses = iter(1.0 * 1.5**k for k in range(100))
    start = clock()
    rc = Reclaimer(lambda: 1000, timer=clock, collect=lambda: clock.advance(next(pauses)), trim=None,
                   first_pause_ms=lambda: 1000.0)
    for _ in range(3600):
        clock.advance(1.0)
        rc.add(1000)
        rc.maybe_collect()
        assert rc.total_ms / 1000.0 <= 0.01 * (clock() - start) + 1e-9
    assert rc.collections >= 5


def test_the_first_pause_estimate_follows_resident_memory():
    before = resident_pause_prior_ms()
    ballast = b"x" * (64 * 2**20)  # written, so resident
    grown = resident_pause_prior_ms() - before
    del ballast
    assert grown == pytest.approx(64 * FIRST_PAUSE_MS_PER_MIB, rel=0.1)


def test_soft_trigger_waits_for_min_interval():
    clock = helpers.FakeClock()
    rc = make_reclaimer(clock, soft_fraction=0.25, hard_fraction=0.5, min_interval=30.0, hard_min_interval=10.0)
    clock.advance(20)
    rc.add(300)  # soft only
    assert not rc.wanted() and rc.maybe_collect() is None and rc.deferred_for_time == 0
    clock.advance(10)
    assert rc.wanted() and rc.maybe_collect() is not None


def test_pause_distribution_is_recorded_per_collection():
    clock = helpers.FakeClock()
    pauses = iter([0.1, 0.3, 0.2, 0.9])

    def collect():
        clock.advance(next(pauses))

    rc = Reclaimer(lambda: 1000, timer=clock, collect=collect, trim=None, hard_min_interval=0, max_time_share=1.0,
                   first_pause_ms=NO_PRIOR)
    for _ in range(4):
        clock.advance(100)
        rc.add(600)
        rc.maybe_collect()
    state = rc.state()
    assert state["pauses_ms"] == pytest.approx([100.0, 300.0, 200.0, 900.0])
    assert state["pause_p50_ms"] == pytest.approx(200.0) and state["pause_p99_ms"] == pytest.approx(900.0)
    assert state["pause_max_ms"] == pytest.approx(900.0) and state["collection_seconds"] == pytest.approx(1.5)


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99 and percentile(values, 100) == 100
    assert percentile([7], 99) == 7 and percentile([], 50) is None


def test_without_trim_collection_still_works():
    clock = helpers.FakeClock()
    rc = Reclaimer(lambda: 1000, timer=clock, trim=None, soft_fraction=0.5, hard_fraction=0.5, first_pause_ms=NO_PRIOR)
    gc.collect()
    clock.advance(60)
    assert rc.maybe_trim() is None
    rc.add(600)
    assert rc.maybe_collect() is not None and rc.collections == 1 and rc.trims == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"trim_interval": -1}, "trim_interval must be >= 0, got -1"),
        ({"hard_min_interval": -1}, "hard_min_interval must be >= 0, got -1"),
        ({"max_time_share": 0}, r"max_time_share must be in \(0, 1\], got 0"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Reclaimer(lambda: 1000, **kwargs)


@pytest.mark.skipif(malloc_trim is None, reason="no glibc malloc_trim here")
def test_glibc_malloc_trim_is_callable():
    assert malloc_trim() in (0, 1)


def test_no_collection_while_the_heap_is_frozen():
    # LocalExecutor freezes the collector around its forks: evicted objects are then in the
    # permanent generation, and a collection would free none of them (yet reset the count)
    clock = helpers.FakeClock()
    rc = make_reclaimer(clock, soft_fraction=0.5, hard_fraction=0.5)
    clock.advance(60)
    rc.add(600)
    objects = [[] for _ in range(5000)]  # allocated since the last collection: the freeze takes them
    gc.freeze()
    try:
        assert rc.wanted() and rc.allowed() and rc.maybe_collect() is None
        assert rc.collections == 0 and rc.uncollected == 600
    finally:
        gc.unfreeze()
        del objects
    assert rc.maybe_collect() is not None and rc.uncollected == 0


def test_what_was_frozen_before_the_reclaimer_is_its_baseline():
    """Python 3.12+ keeps its immortal objects in the permanent generation (the freeze count is
    never 0 there), and an application may freeze its start-up objects for good: neither is a
    fork's freeze in progress, and neither may stop reclaim (against zero, it never collected)."""
    clock = helpers.FakeClock()
    gc.freeze()
    try:
        rc = make_reclaimer(clock, soft_fraction=0.5, hard_fraction=0.5)
        clock.advance(60)
        rc.add(600)
        assert rc.maybe_collect() is not None and rc.uncollected == 0
    finally:
        gc.unfreeze()


def test_a_freeze_that_lasts_is_taken_for_the_applications_own(no_automatic_gc):
    clock = helpers.FakeClock()
    rc = make_reclaimer(clock, soft_fraction=0.5, hard_fraction=0.5)
    objects = [[] for _ in range(5000)]  # what the freeze below adds to the permanent generation
    clock.advance(60)
    rc.add(600)
    gc.freeze()
    try:
        assert rc.maybe_collect() is None  # a fork's freeze, for all it knows
        clock.advance(PERMANENT_FREEZE_AFTER - 1)
        assert rc.maybe_collect() is None and rc.uncollected == 600
        clock.advance(1)
        assert rc.maybe_collect() is not None and rc.uncollected == 0  # it lasted: the application's
    finally:
        gc.unfreeze()
        del objects


def ticking_reclaimer(clock, *, pause: float, **kwargs) -> Reclaimer:
    """A reclaimer with the default triggers and caps whose collection takes ``pause`` s of ``clock``."""
    kwargs.setdefault("first_pause_ms", NO_PRIOR)
    return Reclaimer(lambda: 1000, timer=clock, collect=lambda: clock.advance(pause), trim=None, **kwargs)


def test_default_triggers_keep_live_plus_uncollected_within_a_quarter_of_the_budget(no_automatic_gc):
    """The bag's pattern: a full cache (live = budget), 1.5% of the budget evicted per second,
    one maintenance step per second. The defaults collect before the evicted bytes pass a quarter
    of the budget, within the caps (one per 10 s, 1% of the time)."""
    clock = helpers.FakeClock()
    rc = ticking_reclaimer(clock, pause=0.05)
    held = []
    for _ in range(3600):
        clock.advance(1.0)
        rc.add(15)
        held.append(rc.observe(1000, tick=True))
        rc.maybe_collect()
    assert max(held) <= 1250 and rc.held_peak_bytes == max(held)
    assert rc.state()["held_ticks_by_ratio"]["1.5"] == rc.state()["held_ticks_by_ratio"]["inf"] == 0
    assert sum(rc.held_ticks) == 3600
    assert rc.total_ms / 1000 <= 0.01 * 3600 and rc.collections <= 360


def test_a_soft_collection_leaves_one_collection_of_the_time_share_in_reserve(no_automatic_gc):
    clock = helpers.FakeClock()
    rc = ticking_reclaimer(clock, pause=1.0, soft_fraction=0.1, hard_fraction=0.2, min_interval=30.0,
                           max_time_share=0.01)
    clock.advance(100)
    rc.add(200)
    assert rc.maybe_collect() == pytest.approx(1000.0)  # hard: 1 s of the 1 s earned in 100 s
    clock.advance(149)  # 250 s in: 2.5 s earned, 1 s spent
    rc.add(150)  # soft only: it would spend the reserve (1 + 1 + 1 > 2.5)
    assert rc.wanted() and not rc.allowed() and rc.maybe_collect() is None
    rc.add(50)  # now hard: one more collection fits (1 + 1 <= 2.5)
    assert rc.allowed() and rc.maybe_collect() == pytest.approx(1000.0)
    clock.advance(399)  # 650 s in: 6.5 s earned, 2 s spent
    rc.add(150)
    assert rc.maybe_collect() == pytest.approx(1000.0)  # soft, with room for a hard one after it


def following_reclaimer(clock, *, pause=0.0, **kwargs) -> Reclaimer:
    """A reclaimer with a heap freezer, whose collection (the freezer's) takes ``pause`` s of ``clock``."""
    from bytecache_airflow.freezing import HeapFreezer

    rc = make_reclaimer(clock, freezer=HeapFreezer(timer=clock), **kwargs)
    rc._collect = lambda: (rc.freezer.collect(), clock.advance(pause))
    return rc


def refrozen_and_watched(rc, clock) -> None:
    """The reclaimer's own first refreeze, then a window of maintenance steps in which no frozen
    entry was evicted: from then on it may follow Python's collections."""
    clock.advance(rc.hard_min_interval)
    rc.add(200)  # the hard fraction of make_reclaimer's 1,000 B budget
    assert rc.maybe_collect() is not None
    assert rc.eviction_rate() is None  # the window starts
    clock.advance(EVICTION_RATE_WINDOW)


def test_a_full_collection_of_pythons_is_followed_by_a_freeze_not_by_a_collection(no_automatic_gc):
    clock = helpers.FakeClock()
    rc = following_reclaimer(clock)
    refrozen_and_watched(rc, clock)
    assert not rc.maybe_follow()  # no full collection since our own
    survivors = [[] for _ in range(5000)]
    gc.collect()  # Python's own
    assert not helpers.frozen(survivors[0])
    assert rc.maybe_follow()
    assert helpers.frozen(survivors[0]) and helpers.frozen(survivors[-1])
    assert rc.collections == rc.freezer.refreezes == 1 and rc.freezer.follows == 1  # no walk of ours
    assert not rc.maybe_follow()  # once per full collection
    assert rc.state()["follow_freezes"] == 1


def test_no_follow_before_our_first_refreeze_and_a_window_after_it(no_automatic_gc):
    """Before, nothing evicted was frozen, and a cache still filling up evicts nothing at all:
    the rate of frozen evictions is not known yet."""
    clock = helpers.FakeClock()
    rc = following_reclaimer(clock)
    clock.advance(EVICTION_RATE_WINDOW)
    gc.collect()
    assert not rc.maybe_follow() and rc.follows_declined == 1  # never refrozen
    clock.advance(rc.hard_min_interval)
    rc.add(200)
    assert rc.maybe_collect() is not None
    rc.eviction_rate()
    clock.advance(EVICTION_RATE_WINDOW - 1)
    gc.collect()
    assert not rc.maybe_follow() and rc.follows_declined == 2  # 59 s watched
    clock.advance(1)
    gc.collect()
    assert rc.maybe_follow()


def test_bytes_evicted_before_a_follow_wait_for_our_collection_not_pythons(no_automatic_gc):
    clock = helpers.FakeClock()
    rc = following_reclaimer(clock)
    refrozen_and_watched(rc, clock)
    gc.collect()
    rc.add(100)  # evicted after that collection: still in memory, and frozen by the follow
    assert rc.uncollected == 100 and rc.maybe_follow()
    assert rc.uncollected == 0 and rc.frozen_uncollected == 100
    gc.collect()  # Python's own full collection does not walk the permanent generation
    assert rc.refresh() == 100
    clock.advance(60)
    assert rc.maybe_collect() is not None and rc.pending == 0 and rc.freezer.refreezes == 2


def test_no_follow_while_frozen_evicted_bytes_reach_the_hard_fraction(no_automatic_gc):
    """Frozen evicted bytes wait for our (capped) collection; while they are at the hard fraction,
    new evictions are left to Python's collections, which free what is not frozen."""
    clock = helpers.FakeClock()
    rc = following_reclaimer(clock, hard_fraction=0.2)
    refrozen_and_watched(rc, clock)
    rc.add(200, frozen=True)
    survivor = []
    gc.collect()
    assert not rc.maybe_follow() and not helpers.frozen(survivor)
    clock.advance(60)
    assert rc.maybe_collect() is not None  # ours frees them ...
    gc.collect()
    assert rc.maybe_follow()  # ... and following resumes


def test_no_follow_during_someone_elses_freeze(no_automatic_gc):
    clock = helpers.FakeClock()
    rc = following_reclaimer(clock)
    refrozen_and_watched(rc, clock)
    objects = [[] for _ in range(5000)]
    gc.freeze()  # LocalExecutor, before its forks
    gc.collect()
    assert not rc.maybe_follow() and rc.freezer.follows == 0
    gc.unfreeze()  # after its forks
    del objects
    gc.collect()
    assert rc.maybe_follow()


def test_a_declined_collection_is_not_followed_later(no_automatic_gc):
    """Only right after it: by the time the guard clears, what died since would be frozen too."""
    clock = helpers.FakeClock()
    rc = following_reclaimer(clock, hard_fraction=0.2)
    refrozen_and_watched(rc, clock)
    rc.add(200, frozen=True)
    gc.collect()
    assert not rc.maybe_follow()
    rc.frozen_uncollected = 0  # as if freed
    assert not rc.maybe_follow() and rc.follows_declined == 1  # the same collection: not again
    gc.collect()
    assert rc.maybe_follow()


def test_an_entry_loaded_before_a_follow_counts_as_frozen_when_evicted(no_automatic_gc):
    """The bag passes the freeze epoch the entry was loaded in; the reclaimer compares it under
    the lock the follow takes, so a follow between eviction and count cannot slip through."""
    clock = helpers.FakeClock()
    rc = following_reclaimer(clock)
    refrozen_and_watched(rc, clock)
    loaded_in = rc.freezer.epoch
    rc.add(10, freeze_epoch=loaded_in)
    assert rc.uncollected == 10 and rc.frozen_uncollected == 0
    gc.collect()
    assert rc.maybe_follow()
    rc.add(20, freeze_epoch=loaded_in)
    gc.collect()  # Python's own: frees the first, not the frozen second
    assert rc.refresh() == rc.frozen_uncollected == 20


def test_without_a_freezer_nothing_is_followed(no_automatic_gc):
    clock = helpers.FakeClock()
    rc = make_reclaimer(clock)
    survivor = []
    gc.collect()
    assert not rc.maybe_follow() and not helpers.frozen(survivor)


@pytest.mark.parametrize("bytes_per_second, follows", [(1, True), (3, False)])
def test_a_full_collection_is_followed_only_if_the_evictions_until_our_next_collection_fit(
    no_automatic_gc, bytes_per_second, follows
):
    """After a follow everything cached is frozen: what of it is evicted stays in memory until the
    caps allow our next collection. Frozen entries evicted at 3 B/s: 183 B wait now, and the 88 s
    until then would add 264 B, past the hard fraction (200 B of a 1,000 B budget) though what
    waits now is not; at 1 B/s, 61 + 88 B fit."""
    clock = helpers.FakeClock()
    rc = following_reclaimer(clock, pause=1.0, hard_fraction=0.2)
    clock.advance(100)
    rc.add(200)
    assert rc.maybe_collect() == pytest.approx(1000.0)  # 1 s spent: the next (1.5 s) fits in the 1% at 250 s
    for _ in range(61):  # the first call starts the window
        clock.advance(1)
        rc.add(bytes_per_second, frozen=True)
        assert not rc.maybe_follow()  # samples the rate; no full collection of Python's yet
    assert rc.seconds_until_allowed() == pytest.approx(88.0)
    assert rc.eviction_rate() == pytest.approx(bytes_per_second)
    gc.collect()  # Python's own: frozen evicted bytes stay
    assert rc.pending == 61 * bytes_per_second < 200
    assert rc.maybe_follow() is follows
    assert rc.state()["follows_declined"] == (0 if follows else 1)


def test_the_freeze_count_is_read_at_most_every_poll_interval(no_automatic_gc, monkeypatch):
    """Reading it walks the permanent generation (millions of objects after a refreeze), and the
    maintenance step asks every second whether a refreeze is due."""
    from bytecache_airflow import freezing

    clock = helpers.FakeClock()
    freezer = freezing.HeapFreezer(timer=clock)
    freezer.collect()
    reads = []
    real = gc.get_freeze_count
    monkeypatch.setattr(freezing.gc, "get_freeze_count", lambda: reads.append(clock()) or real())
    for _ in range(100):
        clock.advance(1.0)
        assert not freezer.refreeze_due()
    assert 9 <= len(reads) <= 2 * 10  # undone() and foreign_freeze() each read once per poll
    assert all(b - a >= freezing.FREEZE_POLL_INTERVAL for a, b in zip(reads[::2], reads[2::2]))
    monkeypatch.undo()
    gc.unfreeze()  # someone else's, after its forks
    clock.advance(freezing.FREEZE_POLL_INTERVAL)
    assert freezer.refreeze_due()  # noticed within one interval
