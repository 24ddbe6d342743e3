"""A Hypothesis state machine drives ByteCache against a reference model that predicts it.

The model keeps the entries in an OrderedDict in order of last use, which is what both expiry and
LRU follow. For every write it predicts the removals the cache must report, in the order the
contract gives: the expired entries first, then the replaced value, then the size victims. For
``policy="lru"`` it predicts the victims exactly: the shortest least-recently-used run whose
removal brings the total within ``maxsize``. W-TinyLFU's choice of victims is its own business, so
for it the model checks what every policy promises: nothing is evicted when the write fits, each
victim is taken while the cache is still over budget, and the cache ends within budget. After
every step the policy's own bookkeeping (``policy.segments()``) must partition the cache's entries
with the weights it records.
"""

from collections import OrderedDict

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from bytecache import ByteCache, EvictionCause

from .conftest import FakeClock

EXPIRED, SIZE, REPLACED, EXPLICIT = (
    EvictionCause.EXPIRED,
    EvictionCause.SIZE,
    EvictionCause.REPLACED,
    EvictionCause.EXPLICIT,
)
# Few keys and mostly light values: most keys drawn are held, several at a time, and the budget
# is still exceeded often.
KEYS = st.integers(min_value=0, max_value=5)
MAXSIZE = 20
FITTING_WEIGHTS = st.integers(min_value=0, max_value=6) | st.integers(min_value=0, max_value=MAXSIZE)
WEIGHTS = FITTING_WEIGHTS | st.integers(min_value=MAXSIZE - 1, max_value=MAXSIZE + 3)  # some too heavy
TTL = 10.0
# Policies that keep a value just written within budget readable until something else displaces
# it (read-your-writes): LRU by construction, W-TinyLFU by never choosing the entry a write stores
# as that write's victim.
READS_OWN_WRITES = {"lru", "tinylfu"}


class LoadFailed(Exception):
    pass


class Held:
    """What the model says the cache holds under one key."""

    __slots__ = ("value", "weight", "used")

    def __init__(self, value, weight, used):
        self.value, self.weight, self.used = value, weight, used

    def __repr__(self):
        return f"Held({self.value!r}, weight={self.weight}, used={self.used})"


class CacheMachine(RuleBasedStateMachine):
    @initialize(policy=st.sampled_from(["lru", "tinylfu"]), with_ttl=st.booleans())
    def start(self, policy, with_ttl):
        self.policy = policy
        self.clock = FakeClock()
        self.ttl = TTL if with_ttl else None
        self.events = []
        self.cache = ByteCache(
            MAXSIZE, ttl=self.ttl, timer=self.clock, policy=policy,
            on_evict=lambda *event: self.events.append(event),
        )
        self.model = OrderedDict()  # key -> Held, least recently used first
        self.lookups = self.hits = self.loads = self.rejections = 0
        self.counted = {cause: 0 for cause in EvictionCause}
        self.serial = 0

    # -- the model ------------------------------------------------------------------------
    def expired(self, key):
        return self.ttl is not None and self.clock.now - self.model[key].used >= self.ttl

    def live(self, key):
        return key in self.model and not self.expired(key)

    def total(self):
        return sum(held.weight for held in self.model.values())

    def use(self, key):
        self.model[key].used = self.clock.now
        self.model.move_to_end(key)

    def new_value(self):
        self.serial += 1
        return f"v{self.serial}"

    def take_events(self):
        events, self.events = self.events, []
        for *_, cause in events:
            self.counted[cause] += 1
        return events

    def expire_all(self):
        """Remove every expired entry from the model; return the reports the cache must make."""
        reports = []
        for key in [k for k in self.model if self.expired(k)]:
            held = self.model.pop(key)
            reports.append((key, held.value, held.weight, EXPIRED))
        return reports

    def absorb_optional_expiry(self, events):
        """Calls other than writes may, but need not, remove expired entries (``len`` and
        ``popitem`` run expire(), for example)."""
        for key, value, weight, cause in events:
            assert cause is EXPIRED and key in self.model and self.expired(key)
            held = self.model.pop(key)
            assert held.value is value and held.weight == weight

    def lru_victims(self):
        total, victims = self.total(), []
        for key, held in self.model.items():
            if total <= MAXSIZE:
                break
            victims.append(key)
            total -= held.weight
        return victims

    def write(self, key, value, weight, do):
        """Run ``do()``, which must store ``value`` under ``key`` at ``weight``, and check every
        removal the cache reports against the model's prediction."""
        expected = self.expire_all()
        old = self.model.pop(key, None)
        if old is not None and old.value is not value:
            expected.append((key, old.value, old.weight, REPLACED))
        self.model[key] = Held(value, weight, self.clock.now)
        predicted_victims = self.lru_victims()
        do()
        events = self.take_events()
        assert events[: len(expected)] == expected, "expired entries first, then the replaced value"
        victims = events[len(expected):]
        total = self.total()
        if total <= MAXSIZE:
            assert victims == [], "the write fitted, yet the cache evicted"
        for victim_key, victim_value, victim_weight, cause in victims:
            assert cause is SIZE
            assert total > MAXSIZE, "a victim taken after the cache was within budget"
            held = self.model.pop(victim_key)
            assert held.value is victim_value and held.weight == victim_weight
            total -= victim_weight
        assert total <= MAXSIZE
        if self.policy == "lru":
            assert [k for k, *_ in victims] == predicted_victims
        if self.policy in READS_OWN_WRITES:
            assert key in self.model and key in self.cache

    def delete_live(self, key):
        held = self.model.pop(key)
        del self.cache[key]
        assert self.take_events() == [(key, held.value, held.weight, EXPLICIT)]

    # -- writes ---------------------------------------------------------------------------
    @rule(key=KEYS, weight=WEIGHTS)
    def set(self, key, weight):
        value = self.new_value()
        if weight > MAXSIZE:
            with pytest.raises(ValueError):
                self.cache.set(key, value, weight=weight)
            assert self.events == []
            return
        self.write(key, value, weight, lambda: self.cache.set(key, value, weight=weight))

    @rule(key=KEYS, weight=WEIGHTS)
    def reweigh(self, key, weight):
        """The same value stored again at another weight: not a replacement, but a new weight."""
        value = self.model[key].value if key in self.model else self.new_value()
        if weight > MAXSIZE:
            with pytest.raises(ValueError):
                self.cache.set(key, value, weight=weight)
            assert self.events == []
            return
        self.write(key, value, weight, lambda: self.cache.set(key, value, weight=weight))

    @rule(key=KEYS)
    def delete(self, key):
        if self.live(key):
            self.delete_live(key)
            return
        with pytest.raises(KeyError):
            del self.cache[key]
        self.absorb_optional_expiry(self.take_events())

    @rule()
    def popitem(self):
        if not any(self.live(k) for k in self.model):
            with pytest.raises(KeyError):
                self.cache.popitem()
            self.absorb_optional_expiry(self.take_events())
            return
        least_recently_used = next(k for k in self.model if not self.expired(k))
        key, value = self.cache.popitem()
        *expired, popped = self.take_events()
        self.absorb_optional_expiry(expired)
        assert self.live(key) and self.model[key].value is value
        assert popped == (key, value, self.model[key].weight, EXPLICIT)
        if self.policy == "lru":
            assert key == least_recently_used
        del self.model[key]

    @rule()
    def expire(self):
        expected = self.expire_all()
        assert self.cache.expire() == [(k, v, w) for k, v, w, _ in expected]
        assert self.take_events() == expected

    @precondition(lambda self: self.serial % 7 == 3)
    @rule()
    def clear(self):
        self.cache.clear()
        reported = {}
        for key, value, weight, cause in self.take_events():
            assert cause is EXPLICIT or (cause is EXPIRED and self.expired(key))
            assert key not in reported
            reported[key] = (value, weight)
        assert reported == {k: (held.value, held.weight) for k, held in self.model.items()}
        self.model.clear()

    # -- reads ----------------------------------------------------------------------------
    @rule(key=KEYS, subscript=st.booleans())
    def get(self, key, subscript):
        self.lookups += 1
        if not self.live(key):
            if subscript:
                with pytest.raises(KeyError):
                    self.cache[key]
            else:
                assert self.cache.get(key) is None
            return
        assert (self.cache[key] if subscript else self.cache.get(key)) is self.model[key].value
        self.use(key)
        self.hits += 1

    @rule(key=KEYS)
    def peek(self, key):
        """peek and ``in`` read without using: no counters, no change of recency or idle time."""
        expected = self.model[key].value if self.live(key) else None
        assert self.cache.peek(key) is expected
        assert (key in self.cache) is self.live(key)

    @rule()
    def length(self):
        live = [k for k in self.model if not self.expired(k)]
        assert len(self.cache) == len(live)
        assert sorted(self.cache) == sorted(live)
        self.absorb_optional_expiry(self.take_events())

    @precondition(lambda self: self.model)
    @rule(data=st.data(), action=st.sampled_from(["get", "peek", "delete", "reweigh", "load_too_heavy"]))
    def on_a_held_key(self, data, action):
        """The rules above on a key the cache holds, often one just expired: keys drawn at random
        are often absent, and expired entries are flushed by the next write."""
        key = data.draw(st.sampled_from(sorted(self.model)), label="held key")
        if action == "get":
            self.get(key, subscript=False)
        elif action == "peek":
            self.peek(key)
        elif action == "delete":
            self.delete(key)
        elif action == "reweigh":
            self.reweigh(key, data.draw(WEIGHTS, label="weight"))
        else:
            self.load_too_heavy(key, MAXSIZE + 1)

    @rule(seconds=st.sampled_from([0.5, 3, 9.5, 10, 25]))  # exact in binary: idle == ttl happens
    def advance(self, seconds):
        self.clock.advance(seconds)

    # -- loading --------------------------------------------------------------------------
    @rule(key=KEYS, weight=FITTING_WEIGHTS, fail=st.booleans())
    def get_or_load(self, key, weight, fail):
        value = self.new_value()
        live = self.live(key)

        def loader():
            assert not live, "a live entry must not be reloaded"
            if fail:
                raise LoadFailed()
            return value

        self.lookups += 1
        if live:
            assert self.cache.get_or_load(key, loader, weight=weight) is self.model[key].value
            self.use(key)
            self.hits += 1
            return
        if fail:
            with pytest.raises(LoadFailed):
                self.cache.get_or_load(key, loader, weight=weight)
            assert self.events == []
            return
        self.loads += 1
        self.write(key, value, weight, lambda: self.cache.get_or_load(key, loader, weight=weight))

    @rule(key=KEYS, weight=st.integers(min_value=MAXSIZE + 1, max_value=MAXSIZE + 3))
    def load_too_heavy(self, key, weight):
        """A load heavier than the budget: returned, not stored, and a stale value under its key goes."""
        if self.live(key):
            self.get_or_load(key, weight, fail=False)  # a hit: the weight is not looked at
            return
        value = self.new_value()
        self.lookups += 1
        self.loads += 1
        self.rejections += 1
        stale = key in self.model  # present but expired
        assert self.cache.get_or_load(key, lambda: value, weight=weight) is value
        events = self.take_events()
        self.absorb_optional_expiry(events)
        assert not stale or (key, EXPIRED) in [(k, cause) for k, *_, cause in events]
        assert key not in self.cache._data

    @rule(key=KEYS, weight=WEIGHTS, written_weight=FITTING_WEIGHTS, then_delete=st.booleans())
    def load_racing_a_write(self, key, weight, written_weight, then_delete):
        """The key is written (and maybe deleted) while its load runs: the write wins."""
        if self.live(key):
            self.delete_live(key)
        loaded, written = self.new_value(), self.new_value()

        def loader():
            self.write(key, written, written_weight, lambda: self.cache.set(key, written, weight=written_weight))
            if then_delete and self.live(key):
                self.delete_live(key)
            return loaded

        self.lookups += 1
        self.loads += 1
        if weight > MAXSIZE:
            self.rejections += 1
        assert self.cache.get_or_load(key, loader, weight=weight) is loaded
        assert self.take_events() == []  # nothing has expired since the write inside the load
        assert self.cache.peek(key) is (self.model[key].value if key in self.model else None)
        assert key not in self.model or self.model[key].value is written

    # -- invariants -----------------------------------------------------------------------
    @invariant()
    def accounting_is_exact(self):
        held = self.cache._data
        assert self.cache.currsize == sum(e.weight for e in held.values()) == self.total() <= MAXSIZE
        assert set(held) == set(self.model)
        for key, entry in held.items():
            assert entry.value is self.model[key].value and entry.weight == self.model[key].weight

    @invariant()
    def policy_segments_partition_the_cache(self):
        held = self.cache._data
        seen = []
        for name, (entries, recorded_weight) in self.cache._policy.segments().items():
            for entry in entries:
                assert held.get(entry.key) is entry, f"segment {name} holds {entry.key!r}, not the cache's entry"
            assert recorded_weight == sum(entry.weight for entry in entries), f"segment {name}'s weight"
            seen.extend(entry.key for entry in entries)
        assert len(seen) == len(set(seen)) == len(held) and set(seen) == set(held)

    @invariant()
    def stats_add_up(self):
        stats = self.cache.stats()
        assert stats.hits == self.hits and stats.hits + stats.misses == self.lookups
        assert stats.loads == self.loads and stats.rejections == self.rejections
        assert stats.evictions_size == self.counted[SIZE]
        assert stats.evictions_expired == self.counted[EXPIRED]
        assert stats.entries == len(self.model) and stats.currsize == self.cache.currsize


CacheMachine.TestCase.settings = settings(max_examples=500, stateful_step_count=50, deadline=None)
TestCache = CacheMachine.TestCase


def replay(policy, with_ttl, *steps):
    """Drive the machine through ``steps`` ((rule, arguments) pairs), checking its invariants after
    each: scenarios the random search reaches only now and then, pinned down."""
    machine = CacheMachine()
    machine.start(policy=policy, with_ttl=with_ttl)
    for name, arguments in steps:
        getattr(machine, name)(**arguments)
        machine.accounting_is_exact()
        machine.policy_segments_partition_the_cache()
        machine.stats_add_up()
    return machine


def test_rewriting_an_expired_key_while_evicting_another():
    # Found by the machine above: the model's stale last use of the key being rewritten made
    # its fresh entry look expired to the expire-before-evict check.
    machine = replay(
        "lru", True,
        ("get_or_load", dict(key=4, weight=0, fail=False)),
        ("advance", dict(seconds=0.5)),
        ("get_or_load", dict(key=0, weight=4, fail=False)),
        ("advance", dict(seconds=9.5)),
        ("get_or_load", dict(key=4, weight=17, fail=False)),  # 4 expired: reloaded at 17, evicting 0
    )
    assert list(machine.cache._data) == [4] and machine.cache.currsize == 17


@pytest.mark.parametrize("policy", ["lru", "tinylfu"])
def test_peek_neither_renews_nor_reorders(policy):
    # 0 is peeked when 1 is fresher: 0 must still expire first, and alone.
    machine = replay(
        policy, True,
        ("set", dict(key=0, weight=1)),
        ("advance", dict(seconds=3)),
        ("set", dict(key=1, weight=1)),
        ("peek", dict(key=0)),
        ("advance", dict(seconds=9.5)),  # 0 idle 12.5 s, 1 idle 9.5 s
        ("expire", {}),
    )
    assert list(machine.model) == [1]
    # and the least recently used stays first in line for popitem
    replay("lru", False, ("set", dict(key=0, weight=1)), ("set", dict(key=1, weight=1)),
           ("peek", dict(key=0)), ("popitem", {}))


@pytest.mark.parametrize("policy", ["lru", "tinylfu"])
def test_an_expired_entry_cannot_be_deleted_or_popped(policy):
    machine = replay(
        policy, True,
        ("set", dict(key=0, weight=1)),
        ("advance", dict(seconds=10)),
        ("delete", dict(key=0)),  # KeyError: it is gone for every reader
        ("popitem", {}),  # KeyError: nothing live to pop
    )
    assert machine.model == {}
