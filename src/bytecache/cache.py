"""ByteCache: a thread-safe mapping bounded in bytes, expiring idle entries before evicting live ones."""

from __future__ import annotations

import copy
import io
import logging
import math
import pickle
import threading
import time
from collections import OrderedDict
from collections.abc import MutableMapping
from typing import Any, Callable, Hashable, Iterator

from . import forksafe
from .policies import DEFAULT_POLICY, make_policy
from .sizes import parse_size
from .stats import CacheStats, EvictionCause

__all__ = ["ByteCache", "LoadFailedError"]

logger = logging.getLogger("bytecache")

_EXPIRED, _SIZE, _REPLACED, _EXPLICIT = (
    EvictionCause.EXPIRED,
    EvictionCause.SIZE,
    EvictionCause.REPLACED,
    EvictionCause.EXPLICIT,
)


def _short(obj: object, limit: int = 80) -> str:
    text = repr(obj)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_MISSING = object()


class LoadFailedError(RuntimeError):
    """Raised to a caller that waited on another thread's load, when that load failed with an
    exception that cannot be copied (or that is not an ``Exception``, such as KeyboardInterrupt).
    Its ``__cause__`` is the loading thread's exception."""


class _Entry:
    __slots__ = ("key", "value", "weight", "accessed", "segment", "slots", "prior", "touched")

    def __init__(self, key: Hashable, value: Any, weight: int, accessed: float) -> None:
        self.key = key
        self.value = value
        self.weight = weight
        self.accessed = accessed

    # Explicit so that pickle protocols 0 and 1 accept a class with __slots__; the policy's
    # fields are carried only if the policy set them.
    def __getstate__(self) -> dict:
        return {name: getattr(self, name) for name in self.__slots__ if hasattr(self, name)}

    def __setstate__(self, state: dict) -> None:
        for name, value in state.items():
            setattr(self, name, value)


class _Flight:
    """One in-progress load that concurrent callers for the same key wait on."""

    __slots__ = ("done", "value", "error", "stale")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.stale = False  # the key was written or deleted meanwhile: the result must not be stored


class ByteCache(MutableMapping):
    """A mapping whose entries are weighed in bytes.

    On every write, entries idle for ``ttl`` seconds are removed first; then, while the total
    weight exceeds ``maxsize``, the policy picks victims. ``currsize`` is the weight held, which
    may include entries past their TTL that no write or ``expire()`` has removed yet; those are
    never returned by reads.

    ``copy.copy``, ``copy.deepcopy`` and pickling give an independent cache with the same settings,
    contents and policy state (see "copying and pickling" below).
    """

    def __init__(
        self,
        maxsize: int | str | None,
        *,
        ttl: float | None = None,
        getsizeof: Callable[[Any], int] | None = None,
        timer: Callable[[], float] = time.monotonic,
        policy: str = DEFAULT_POLICY,
        on_evict: Callable[[Hashable, Any, int, EvictionCause], Any] | None = None,
    ) -> None:
        self._maxsize = _check_maxsize(maxsize)
        self._ttl = _check_ttl(ttl)
        for name, fn in (("getsizeof", getsizeof), ("on_evict", on_evict)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable or None, got {_short(fn)}")
        if not callable(timer):
            raise TypeError(f"timer must be callable, got {_short(timer)}")
        # maxsize 0 holds only weightless values; the policy still needs a positive budget to size
        # its segments, and never evicts since nothing with weight gets in.
        policy_impl = make_policy(policy, self._maxsize or 1)
        self._policy = policy_impl if self._maxsize is not None else None
        self.policy = policy_impl.name
        self._getsizeof = getsizeof
        self._on_evict = on_evict
        self.timer = timer
        self._data: OrderedDict[Hashable, _Entry] = OrderedDict()  # least recently used first
        self._currsize = 0
        self._zero_stats()
        self._start_runtime()

    def _start_runtime(self) -> None:
        """The per-object machinery a copy or an unpickled cache gets fresh, never shared."""
        self._lock = threading.RLock()
        self._flights: dict[Hashable, _Flight] = {}
        self._record_access = self._policy.record_access if self._policy is not None else None
        forksafe.register(self, "_lock", after_in_child=ByteCache._forget_flights)

    def _forget_flights(self) -> None:
        # In a forked child: the threads loading these keys stayed in the parent, so nobody
        # would ever land them; the next caller for such a key loads it itself.
        self._flights = {}

    # -- the weighing interface, as in cachetools -------------------------------------------
    @property
    def maxsize(self) -> int | None:
        return self._maxsize

    @property
    def currsize(self) -> int:
        return self._currsize

    @property
    def ttl(self) -> float | None:
        return self._ttl

    def getsizeof(self, value: Any) -> int:
        return 1 if self._getsizeof is None else self._getsizeof(value)

    # -- reads -------------------------------------------------------------------------------
    def __getitem__(self, key: Hashable) -> Any:
        value = self._lookup(key)
        if value is _MISSING:
            return self.__missing__(key)
        return value

    def __missing__(self, key: Hashable) -> Any:
        raise KeyError(key)

    def get(self, key: Hashable, default: Any = None) -> Any:
        value = self._lookup(key)
        return default if value is _MISSING else value

    def _lookup(self, key: Hashable) -> Any:
        # The hit path: one dict lookup, a clock read, a few list links, counters.
        with self._lock:
            try:
                entry = self._data.get(key)
            except TypeError:
                raise _unhashable(key) from None
            if entry is None:
                self._misses += 1
                return _MISSING
            ttl = self._ttl
            if ttl is not None:
                now = self.timer()
                if now - entry.accessed >= ttl:
                    self._misses += 1  # left in place: the next write or expire() removes it
                    return _MISSING
                entry.accessed = now
            self._data.move_to_end(key)
            if self._record_access is not None:
                self._record_access(entry)
            self._hits += 1
            return entry.value

    def __contains__(self, key: object) -> bool:
        with self._lock:
            entry = self._data.get(key)  # type: ignore[call-overload]
            return entry is not None and not self._is_expired(entry, self.timer() if self._ttl else 0)

    def peek(self, key: Hashable, default: Any = None) -> Any:
        """The live value for ``key`` or ``default``, without counting a hit or miss or marking it used."""
        with self._lock:
            entry = self._data.get(key)
            if entry is None or self._is_expired(entry, self.timer() if self._ttl else 0):
                return default
            return entry.value

    def weight_of(self, key: Hashable) -> int:
        """The weight stored for ``key``; KeyError if absent. Counts as neither hit nor use."""
        with self._lock:
            entry = self._data.get(key)
            if entry is None or self._is_expired(entry, self.timer() if self._ttl else 0):
                raise KeyError(key)
            return entry.weight

    def weighed_items(self) -> list[tuple[Hashable, Any, int]]:
        """A consistent copy of the live ``(key, value, weight)`` triples, taken under the lock.

        For monitoring and maintenance that walk the contents while lookups go on: unlike
        iterating, it neither expires nor marks anything used, and counts no hit or miss."""
        with self._lock:
            now = self.timer() if self._ttl else 0
            return [(k, e.value, e.weight) for k, e in self._data.items() if not self._is_expired(e, now)]

    def __iter__(self) -> Iterator[Hashable]:
        self.expire()
        with self._lock:
            return iter(list(self._data))

    def __len__(self) -> int:
        self.expire()
        return len(self._data)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(maxsize={self._maxsize}, currsize={self._currsize}, "
            f"entries={len(self._data)}, ttl={self._ttl}, policy={self.policy!r})"
        )

    # -- writes ------------------------------------------------------------------------------
    def setdefault(self, key: Hashable, default: Any = None) -> Any:
        """``cache[key]`` if live, else store and return ``default``. Unlike MutableMapping's, this
        never calls ``__missing__`` (cachetools calls it only from ``__getitem__``)."""
        value = self._lookup(key)
        if value is _MISSING:
            self[key] = value = default
        return value

    def __setitem__(self, key: Hashable, value: Any) -> None:
        self.set(key, value)

    def set(self, key: Hashable, value: Any, *, weight: int | None = None) -> None:
        """Store ``value``; ``weight`` (bytes) overrides ``getsizeof``. Raises ValueError, leaving
        the cache unchanged, if the value weighs more than ``maxsize``."""
        _check_key(key)
        weight = self._weigh(value, weight)
        self._check_fits(key, weight)
        with self._lock:
            evicted = self._store(key, value, weight)
        self._notify(evicted)

    def reweigh(self, key: Hashable, weight: int | None = None) -> int:
        """Weigh the live value under ``key`` again -- ``weight``, or ``getsizeof(value)`` if None --
        for a value whose size changed in place; returns the new weight.

        Not a use: recency, frequency and the idle clock stay as they were. If the cache is now
        over ``maxsize`` the policy evicts as on a write (the value itself, if it no longer fits
        at all). KeyError if there is no live value; a bad weight raises and changes nothing.
        ``getsizeof`` is called with the lock held: it must be cheap and must not use the cache."""
        evicted: list = []
        with self._lock:
            entry = self._data.get(key)
            if entry is None or self._is_expired(entry, self.timer() if self._ttl else 0):
                raise KeyError(key)
            weight = self._weigh(entry.value, weight)
            old_weight = entry.weight
            if weight == old_weight:
                return weight
            if self._maxsize is not None and weight > self._maxsize:
                self._unlink(entry)
                self._evictions_size += 1
                evicted.append((key, entry.value, old_weight, _SIZE))
            else:
                entry.weight = weight
                self._currsize += weight - old_weight
                if self._policy is not None:
                    self._policy.resize(entry, old_weight)
                    self._evict_excess(evicted)
        self._notify(evicted)
        return weight

    def __delitem__(self, key: Hashable) -> None:
        self._remove(key)

    def pop(self, key: Hashable, *default: Any) -> Any:
        if len(default) > 1:
            raise TypeError(f"pop expected at most 2 arguments, got {1 + len(default)}")
        try:
            return self._remove(key)
        except KeyError:
            if default:
                return default[0]
            raise

    def popitem(self) -> tuple[Hashable, Any]:
        """Remove and return the least recently used live item."""
        self.expire()
        with self._lock:
            if not self._data:
                raise KeyError(f"{type(self).__name__} is empty") from None
            entry = next(iter(self._data.values()))
            self._unlink(entry)
        self._notify([(entry.key, entry.value, entry.weight, _EXPLICIT)])
        return entry.key, entry.value

    def clear(self) -> None:
        with self._lock:
            removed = [(e.key, e.value, e.weight, _EXPLICIT) for e in self._data.values()]
            self._data.clear()
            self._currsize = 0
            if self._policy is not None:
                self._policy.clear()
            for flight in self._flights.values():
                flight.stale = True
        self._notify(removed)

    def expire(self) -> list[tuple[Hashable, Any, int]]:
        """Remove every entry idle for ``ttl`` or longer; return them as (key, value, weight)."""
        if self._ttl is None:
            return []
        evicted: list = []
        with self._lock:
            self._evict_expired(self.timer(), evicted)
        self._notify(evicted)
        return [(k, v, w) for k, v, w, _ in evicted]

    # -- loading -----------------------------------------------------------------------------
    def get_or_load(
        self,
        key: Hashable,
        loader: Callable[[], Any],
        *,
        weight: int | Callable[[Any], int] | None = None,
    ) -> Any:
        """Return the cached value, or call ``loader()`` once and cache its result.

        Concurrent callers for the same missing key wait for the one load; if the loader raises,
        nothing is cached, the loading caller gets its exception and each waiter a copy of it
        chained to it (``LoadFailedError`` if it cannot be copied). ``weight`` may be a callable of
        the loaded value. A value heavier than ``maxsize`` is returned without being cached (a
        rejection).
        """
        with self._lock:
            value = self._lookup(key)
            if value is not _MISSING:
                return value
            flight = self._flights.get(key)
            leading = flight is None
            if leading:
                flight = self._flights[key] = _Flight()
        if not leading:
            flight.done.wait()
            if flight.error is not None:
                raise _own_copy(flight.error) from flight.error
            return flight.value

        evicted: list = []
        try:
            try:
                value = loader()
                size = self._weigh(value, weight(value) if callable(weight) else weight)
            except BaseException as exc:
                flight.error = exc
                with self._lock:
                    self._load_failures += 1
                    self._land(key, flight)
                raise
            # Waiters get the value even if storing it fails below: the load itself succeeded.
            flight.value = value
            with self._lock:
                self._loads += 1
                self._land(key, flight)
                if self._maxsize is not None and size > self._maxsize:
                    self._rejections += 1
                    if self._ttl is not None:  # a stale value under this key goes even so
                        self._evict_expired(self.timer(), evicted)
                elif not flight.stale:
                    evicted = self._store(key, value, size)
        finally:
            flight.done.set()  # whatever happened above, nobody waits forever
        self._notify(evicted)
        return value

    def _land(self, key: Hashable, flight: _Flight) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]

    # -- statistics --------------------------------------------------------------------------
    def stats(self) -> CacheStats:
        with self._lock:
            lookups = self._hits + self._misses
            return CacheStats(
                hits=self._hits,
                misses=self._misses,
                hit_ratio=self._hits / lookups if lookups else 0.0,
                loads=self._loads,
                load_failures=self._load_failures,
                evictions_expired=self._evictions_expired,
                evictions_size=self._evictions_size,
                rejections=self._rejections,
                currsize=self._currsize,
                maxsize=self._maxsize,
                entries=len(self._data),
                callback_errors=self._callback_errors,
            )

    def reset_stats(self) -> None:
        with self._lock:
            self._zero_stats()

    def _zero_stats(self) -> None:
        self._hits = self._misses = self._loads = self._load_failures = 0
        self._evictions_expired = self._evictions_size = self._rejections = 0
        self._callback_errors = 0

    # -- internals (called with the lock held) ----------------------------------------------
    def _is_expired(self, entry: _Entry, now: float) -> bool:
        return self._ttl is not None and now - entry.accessed >= self._ttl

    def _store(self, key: Hashable, value: Any, weight: int) -> list:
        evicted: list = []
        now = 0.0
        if self._ttl is not None:
            now = self.timer()
            self._evict_expired(now, evicted)
        flight = self._flights.get(key)
        if flight is not None:
            flight.stale = True
        entry = self._data.get(key)
        if entry is None:
            entry = self._data[key] = _Entry(key, value, weight, now)
            self._currsize += weight
            if self._policy is not None:
                self._policy.add(entry)
        else:
            if entry.value is not value:
                evicted.append((key, entry.value, entry.weight, _REPLACED))
            old_weight = entry.weight
            entry.value, entry.weight, entry.accessed = value, weight, now
            self._currsize += weight - old_weight
            self._data.move_to_end(key)
            if self._policy is not None:
                self._policy.reweigh(entry, old_weight)
        self._evict_excess(evicted)
        return evicted

    def _evict_excess(self, evicted: list) -> None:
        if self._maxsize is not None and self._currsize > self._maxsize:
            for victim in self._policy.evict(self._currsize - self._maxsize):  # type: ignore[union-attr]
                del self._data[victim.key]
                self._currsize -= victim.weight
                self._evictions_size += 1
                evicted.append((victim.key, victim.value, victim.weight, _SIZE))

    def _evict_expired(self, now: float, evicted: list) -> None:
        # _data is in order of last use, so the expired entries are a prefix of it.
        ttl = self._ttl
        data = self._data
        while data:
            entry = next(iter(data.values()))
            if now - entry.accessed < ttl:  # type: ignore[operator]
                return
            self._unlink(entry)
            self._evictions_expired += 1
            evicted.append((entry.key, entry.value, entry.weight, _EXPIRED))

    def _unlink(self, entry: _Entry) -> None:
        del self._data[entry.key]
        self._currsize -= entry.weight
        if self._policy is not None:
            self._policy.remove(entry)

    def _remove(self, key: Hashable) -> Any:
        with self._lock:
            try:
                entry = self._data.get(key)
            except TypeError:
                raise _unhashable(key) from None
            flight = self._flights.get(key)
            if flight is not None:
                flight.stale = True
            if entry is None or self._is_expired(entry, self.timer() if self._ttl else 0):
                raise KeyError(key)
            self._unlink(entry)
        self._notify([(key, entry.value, entry.weight, _EXPLICIT)])
        return entry.value

    def _weigh(self, value: Any, weight: Any) -> int:
        if weight is None:
            source = "getsizeof"
            try:
                weight = self.getsizeof(value)
            except Exception as exc:
                raise ValueError(f"getsizeof raised {exc!r} for value {_short(value)}") from exc
        else:
            source = "weight"
        if isinstance(weight, bool) or not isinstance(weight, int):
            raise TypeError(
                f"{source} must give a whole number of bytes, got {type(weight).__name__} {weight!r}"
                f" for value {_short(value)}"
            )
        if weight < 0:
            raise ValueError(f"{source} must give a weight >= 0, got {weight!r} for value {_short(value)}")
        return weight

    def _check_fits(self, key: Hashable, weight: int) -> None:
        if self._maxsize is not None and weight > self._maxsize:
            raise ValueError(
                f"value for key {_short(key)} weighs {weight} bytes, more than maxsize {self._maxsize} bytes"
            )

    def _notify(self, evicted: list) -> None:
        """Tell on_evict, outside the lock, so callbacks may use the cache.

        A callback that raises is logged and counted (``stats().callback_errors``), never raised:
        the caller's write, delete or load succeeded, and the removals after the failing one are
        still reported.
        """
        if not evicted or self._on_evict is None:
            return
        for key, value, weight, cause in evicted:
            try:
                self._on_evict(key, value, weight, cause)
            except Exception:
                with self._lock:
                    self._callback_errors += 1
                logger.exception("on_evict raised for key %s (%s)", _short(key), cause.value)

    # -- copying and pickling ----------------------------------------------------------------
    # A copy gets its own storage, policy state, lock and (no) loads in flight, and the same
    # settings: timer, getsizeof and on_evict are the same objects, as cachetools shares getsizeof.
    # The policy is copied, not rebuilt by replaying the entries: a replay would lose what the
    # policy learnt (frequency history, window size, segment membership) and make the copy
    # behave differently from its source. Storage and policy are deep-copied in one pass with
    # one memo, so each copied entry is the same object in both (the policy keeps its entries
    # linked to the cache's) -- whatever state a policy holds, without knowing its layout.
    # A shallow copy shares keys and values (they are put in the memo as themselves).

    def __copy__(self) -> "ByteCache":
        return self._duplicate(deep=False, memo={})

    def __deepcopy__(self, memo: dict) -> "ByteCache":
        return self._duplicate(deep=True, memo=memo)

    def _duplicate(self, *, deep: bool, memo: dict) -> "ByteCache":
        clone = object.__new__(type(self))
        memo[id(self)] = clone
        with self._lock:
            state = self._copied_state(memo, share_contents=not deep)
            if deep:  # the caller's own attributes of a subclass, and the statistics
                state = {
                    name: value if name in _STRUCTURE else copy.deepcopy(value, memo)
                    for name, value in state.items()
                }
        clone.__dict__.update(state)
        clone._start_runtime()
        return clone

    def _copied_state(self, memo: dict, *, share_contents: bool) -> dict:
        """Every attribute but the runtime ones, storage and policy copied together (lock held)."""
        for setting in (self.timer, self._getsizeof, self._on_evict):
            memo[id(setting)] = setting
        if share_contents:
            for key, entry in self._data.items():
                memo[id(key)] = key
                memo[id(entry.value)] = entry.value
        state = {name: value for name, value in self.__dict__.items() if name not in _RUNTIME}
        state["_data"], state["_policy"] = copy.deepcopy((self._data, self._policy), memo)
        return state

    def __getstate__(self) -> dict:
        # Snapshot under the lock (pickling itself runs after this returns, while other threads
        # may write); in-flight loads are not carried: their callers belong to this process.
        self._check_picklable_settings()
        with self._lock:
            state = self._copied_state({}, share_contents=True)
            state["_pickled_at"] = self.timer() if self._ttl is not None else None
        return state

    def __setstate__(self, state: dict) -> None:
        pickled_at = state.pop("_pickled_at", None)
        self.__dict__.update(state)
        self._start_runtime()
        if pickled_at is not None:
            # Idle ages are kept, not clock readings: the timer of another process (or after a
            # reboot, for time.monotonic) has another origin. Time spent pickled is not idle time.
            shift = self.timer() - pickled_at
            for entry in self._data.values():
                entry.accessed += shift

    def _check_picklable_settings(self) -> None:
        for name, setting in (("timer", self.timer), ("getsizeof", self._getsizeof), ("on_evict", self._on_evict)):
            if setting is None:
                continue
            try:
                _SettingPickler(io.BytesIO(), self).dump(setting)
            except Exception as exc:
                label = getattr(setting, "__qualname__", None) or _short(setting)
                raise pickle.PicklingError(
                    f"{type(self).__name__} cannot be pickled: its {name} {label} is not picklable ({exc}); "
                    f"use a module-level function or a picklable object"
                ) from exc


_RUNTIME = frozenset({"_lock", "_flights", "_record_access"})
_STRUCTURE = frozenset({"_data", "_policy"})


class _SettingPickler(pickle.Pickler):
    """Pickles one setting to see if it can be; the cache it belongs to is not descended into
    (an on_evict bound to an object that holds the cache would otherwise recurse)."""

    def __init__(self, file: io.BytesIO, cache: ByteCache) -> None:
        super().__init__(file, pickle.HIGHEST_PROTOCOL)
        self._cache = cache

    def persistent_id(self, obj: object) -> str | None:
        return "the cache" if obj is self._cache else None


def _own_copy(error: BaseException) -> BaseException:
    """An exception for a waiting thread: a copy of the loading thread's, so each thread raises
    (and grows the traceback of) its own object; LoadFailedError when it cannot be copied."""
    if isinstance(error, Exception):
        try:
            duplicate = copy.copy(error)
        except Exception:
            duplicate = None
        if type(duplicate) is type(error) and duplicate is not error:
            return duplicate
    return LoadFailedError(f"the load in another thread failed: {error!r}")


def _check_maxsize(maxsize: Any) -> int | None:
    # cachetools' meanings: inf is no cap, 0 holds only weightless values.
    if maxsize is None or (isinstance(maxsize, float) and maxsize == math.inf):
        return None
    return parse_size(maxsize, name="maxsize", allow_zero=True)


def _check_key(key: Any) -> None:
    try:
        hash(key)
    except TypeError:
        raise _unhashable(key) from None


def _unhashable(key: Any) -> TypeError:
    return TypeError(f"key must be hashable, got {type(key).__name__} {_short(key)}")


def _check_ttl(ttl: Any) -> float | None:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise TypeError(f"ttl must be a number of seconds or None, got {type(ttl).__name__} {ttl!r}")
    if math.isnan(ttl) or ttl <= 0:
        raise ValueError(f"ttl must be > 0 seconds (or None for no expiry), got {ttl!r}")
    return None if math.isinf(ttl) else ttl
