"""A Hypothesis state machine drives ByteCache against a reference model of what it must hold."""

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from bytecache import ByteCache, EvictionCause

from .conftest import FakeClock

KEYS = st.integers(min_value=0, max_value=9)
MAXSIZE = 20
TTL = 10.0


class LoadFailed(Exception):
    pass


class CacheMachine(RuleBasedStateMachine):
    @initialize(policy=st.sampled_from(["lru", "tinylfu"]), with_ttl=st.booleans())
    def start(self, policy, with_ttl):
        self.clock = FakeClock()
        self.ttl = TTL if with_ttl else None
        self.events = []
        self.cache = ByteCache(
            MAXSIZE, ttl=self.ttl, timer=self.clock, policy=policy,
            on_evict=lambda *event: self.events.append(event),
        )
        self.model = {}  # key -> [value, weight, last use]
        self.lookups = self.hits = 0
        self.counted = {cause: 0 for cause in EvictionCause}
        self.serial = 0

    # -- helpers --------------------------------------------------------------------------
    def expired(self, key):
        return self.ttl is not None and self.clock.now - self.model[key][2] >= self.ttl

    def absorb_events(self, stored=None):
        """Apply what the cache reported, checking each report against the model.

        ``stored`` is the (key, value, weight) a write just stored. The cache reports a write's
        removals in the order it makes them: expired entries, then the replaced value, then size
        evictions, which may include the new entry itself (a rejected candidate).
        """
        events, self.events = self.events, []
        causes = [cause for *_, cause in events]
        if EvictionCause.SIZE in causes:
            # expiry runs before size eviction within a write, so none may be left behind (the
            # key just written is fresh: the model learns its new last use below)
            fresh = stored[0] if stored is not None else None
            assert not any(self.expired(k) for k in self.cache._data if k in self.model and k != fresh)
        for key, value, weight, cause in events:
            self.counted[cause] += 1
            if stored is not None and cause is EvictionCause.SIZE:
                self.store(*stored)
                stored = None
            assert key in self.model and self.model[key][0] is value and self.model[key][1] == weight
            if cause is EvictionCause.EXPIRED:
                assert self.expired(key)
            if cause is not EvictionCause.REPLACED:
                del self.model[key]
        if stored is not None:
            self.store(*stored)

    def store(self, key, value, weight):
        self.model[key] = [value, weight, self.clock.now]

    def new_value(self):
        self.serial += 1
        return f"v{self.serial}"

    # -- rules ----------------------------------------------------------------------------
    @rule(key=KEYS, weight=st.integers(min_value=0, max_value=MAXSIZE + 3))
    def set(self, key, weight):
        value = self.new_value()
        if weight > MAXSIZE:
            with pytest.raises(ValueError):
                self.cache.set(key, value, weight=weight)
            assert self.events == []
            return
        self.cache.set(key, value, weight=weight)
        self.absorb_events(stored=(key, value, weight))

    @rule(key=KEYS)
    def get(self, key):
        self.lookups += 1
        got = self.cache.get(key)
        if key not in self.model or self.expired(key):
            assert got is None
        else:
            assert got == self.model[key][0]
            self.model[key][2] = self.clock.now
            self.hits += 1

    @rule(key=KEYS, weight=st.integers(min_value=0, max_value=MAXSIZE + 3), fail=st.booleans())
    def get_or_load(self, key, weight, fail):
        value = self.new_value()
        live = key in self.model and not self.expired(key)

        def loader():
            assert not live, "a live entry must not be reloaded"
            if fail:
                raise LoadFailed()
            return value

        self.lookups += 1
        if live:
            assert self.cache.get_or_load(key, loader, weight=weight) == self.model[key][0]
            self.model[key][2] = self.clock.now
            self.hits += 1
            return
        if fail:
            with pytest.raises(LoadFailed):
                self.cache.get_or_load(key, loader, weight=weight)
            assert self.events == []
            return
        rejections = self.cache.stats().rejections
        assert self.cache.get_or_load(key, loader, weight=weight) is value
        if weight > MAXSIZE:
            assert self.cache.stats().rejections == rejections + 1 and key not in self.cache._data
            self.absorb_events()
        else:
            self.absorb_events(stored=(key, value, weight))

    @rule(key=KEYS)
    def delete(self, key):
        if key in self.model and not self.expired(key):
            del self.cache[key]
        else:
            with pytest.raises(KeyError):
                del self.cache[key]
        self.absorb_events()

    @rule(seconds=st.sampled_from([0.5, 3, 9.99, 10, 25]))
    def advance(self, seconds):
        self.clock.advance(seconds)

    @rule()
    def expire(self):
        removed = self.cache.expire()
        self.absorb_events()
        assert all(k not in self.cache._data for k, _, _ in removed)

    @precondition(lambda self: self.serial % 7 == 3)
    @rule()
    def clear(self):
        self.cache.clear()
        self.absorb_events()
        assert self.model == {}

    # -- invariants -----------------------------------------------------------------------
    @invariant()
    def accounting_is_exact(self):
        held = self.cache._data
        assert self.cache.currsize == sum(e.weight for e in held.values()) <= MAXSIZE
        assert set(held) == set(self.model)
        for key, entry in held.items():
            assert entry.value is self.model[key][0] and entry.weight == self.model[key][1]
        policy = self.cache._policy
        assert len(policy) == len(held)

    @invariant()
    def stats_add_up(self):
        stats = self.cache.stats()
        assert stats.hits == self.hits and stats.hits + stats.misses == self.lookups
        assert stats.evictions_size == self.counted[EvictionCause.SIZE]
        assert stats.evictions_expired == self.counted[EvictionCause.EXPIRED]
        assert stats.entries == len(self.model) and stats.currsize == self.cache.currsize


CacheMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=50, deadline=None)
TestCache = CacheMachine.TestCase


def test_rewriting_an_expired_key_while_evicting_another():
    # Found by the machine above: the model's stale last use of the key being rewritten made
    # its fresh entry look expired to the expire-before-evict check.
    machine = CacheMachine()
    machine.start(policy="lru", with_ttl=True)
    machine.get_or_load(key=4, weight=0, fail=False)
    machine.advance(seconds=0.5)
    machine.get_or_load(key=0, weight=4, fail=False)
    machine.advance(seconds=9.99)
    machine.get_or_load(key=4, weight=17, fail=False)  # 4 expired: reloaded at 17, evicting 0
    assert list(machine.cache._data) == [4] and machine.cache.currsize == 17
    machine.teardown()
