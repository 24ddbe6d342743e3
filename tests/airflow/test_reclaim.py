"""The reclaimer's heap trim: after a full collection, rate-limited, and a no-op without glibc."""

from __future__ import annotations

import gc

import airflow_helpers as helpers
import pytest

from bytecache_airflow.reclaim import Reclaimer, malloc_trim


def make_reclaimer(clock, trims, **kwargs):
    kwargs.setdefault("trim_interval", 10.0)
    return Reclaimer(lambda: 1000, timer=clock, trim=lambda: trims.append(clock()), **kwargs)


def test_trims_only_after_a_full_collection_and_at_most_every_interval():
    clock, trims = helpers.FakeClock(), []
    rc = make_reclaimer(clock, trims)
    t0 = clock()
    clock.advance(60)
    assert rc.maybe_trim() is None and trims == []  # nothing was collected: nothing to give back
    gc.collect()
    assert rc.maybe_trim() is not None and trims == [t0 + 60]
    assert rc.maybe_trim() is None  # no collection since
    gc.collect()
    clock.advance(5)
    assert rc.maybe_trim() is None  # within the interval
    clock.advance(5)
    assert rc.maybe_trim() is not None and trims == [t0 + 60, t0 + 70]
    assert rc.trims == 2 and rc.trim_ms >= 0


def test_own_collection_trims_at_once():
    clock, trims = helpers.FakeClock(), []
    rc = make_reclaimer(clock, trims, soft_fraction=0.5, hard_fraction=0.5, trim_interval=3600)
    rc.add(600)  # past the hard fraction of the 1000-byte budget
    assert rc.maybe_collect() is not None
    assert rc.collections == 1 and rc.trims == 1 and len(trims) == 1 and rc.uncollected == 0


def test_without_trim_collection_still_works():
    clock = helpers.FakeClock()
    rc = Reclaimer(lambda: 1000, timer=clock, trim=None, soft_fraction=0.5, hard_fraction=0.5)
    gc.collect()
    clock.advance(60)
    assert rc.maybe_trim() is None
    rc.add(600)
    assert rc.maybe_collect() is not None and rc.collections == 1 and rc.trims == 0


def test_bad_trim_interval_is_refused():
    with pytest.raises(ValueError, match="trim_interval must be >= 0, got -1"):
        Reclaimer(lambda: 1000, trim_interval=-1)


@pytest.mark.skipif(malloc_trim is None, reason="no glibc malloc_trim here")
def test_glibc_malloc_trim_is_callable():
    assert malloc_trim() in (0, 1)
