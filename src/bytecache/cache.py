"""ByteCache: a thread-safe mapping bounded in bytes, expiring idle entries before evicting live ones."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import MutableMapping
from typing import Any, Callable, Hashable, Iterator

from .policies import DEFAULT_POLICY, make_policy
from .sizes import parse_size
from .stats import CacheStats, EvictionCause

__all__ = ["ByteCache"]

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


class _Entry:
    __slots__ = ("key", "value", "weight", "accessed", "segment", "slots", "prior", "touched")

    def __init__(self, key: Hashable, value: Any, weight: int, accessed: float) -> None:
        self.key = key
        self.value = value
        self.weight = weight
        self.accessed = accessed


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
        self._maxsize = None if maxsize is None else parse_size(maxsize, name="maxsize")
        self._ttl = _check_ttl(ttl)
        for name, fn in (("getsizeof", getsizeof), ("on_evict", on_evict)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable or None, got {_short(fn)}")
        if not callable(timer):
            raise TypeError(f"timer must be callable, got {_short(timer)}")
        policy_impl = make_policy(policy, self._maxsize or 1)
        self._policy = policy_impl if self._maxsize is not None else None
        self._record_access = self._policy.record_access if self._policy is not None else None
        self.policy = policy_impl.name
        self._getsizeof = getsizeof
        self._on_evict = on_evict
        self.timer = timer
        self._data: OrderedDict[Hashable, _Entry] = OrderedDict()  # least recently used first
        self._currsize = 0
        self._lock = threading.RLock()
        self._flights: dict[Hashable, _Flight] = {}
        self._zero_stats()

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
                raise KeyError(f"{type(self).__name__} is empty")
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

        Concurrent callers for the same missing key wait for the one load; a loader exception is
        raised to each of them and nothing is cached. ``weight`` may be a callable of the loaded
        value. A value heavier than ``maxsize`` is returned without being cached (a rejection).
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
                raise flight.error
            return flight.value

        try:
            value = loader()
            size = self._weigh(value, weight(value) if callable(weight) else weight)
        except BaseException as exc:
            with self._lock:
                self._load_failures += 1
                self._land(key, flight)
            flight.error = exc
            flight.done.set()
            raise
        evicted: list = []
        with self._lock:
            self._loads += 1
            self._land(key, flight)
            if self._maxsize is not None and size > self._maxsize:
                self._rejections += 1
                if self._ttl is not None:  # a stale value under this key goes even so
                    self._evict_expired(self.timer(), evicted)
            elif not flight.stale:
                evicted = self._store(key, value, size)
        flight.value = value
        flight.done.set()
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
            )

    def reset_stats(self) -> None:
        with self._lock:
            self._zero_stats()

    def _zero_stats(self) -> None:
        self._hits = self._misses = self._loads = self._load_failures = 0
        self._evictions_expired = self._evictions_size = self._rejections = 0

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
        if self._maxsize is not None and self._currsize > self._maxsize:
            for victim in self._policy.evict(self._currsize - self._maxsize):  # type: ignore[union-attr]
                del self._data[victim.key]
                self._currsize -= victim.weight
                self._evictions_size += 1
                evicted.append((victim.key, victim.value, victim.weight, _SIZE))
        return evicted

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
        """Tell on_evict, outside the lock, so callbacks may use the cache."""
        if not evicted or self._on_evict is None:
            return
        first_error = None
        for key, value, weight, cause in evicted:
            try:
                self._on_evict(key, value, weight, cause)
            except Exception as exc:  # every removal is reported even if one callback fails
                first_error = first_error or exc
        if first_error is not None:
            raise first_error


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
