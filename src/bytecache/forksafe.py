"""Fork safety: a forked child gets free locks and no loads left waiting on a thread it lacks.

Only the thread that called ``os.fork()`` exists in the child. A lock another thread held at
that moment stays held there forever (the first use deadlocks), and a load another thread had
in flight never finishes there. Objects registered with :func:`register` take part in every
fork of the process, the way the standard library's ``logging`` guards its own locks:

* before it, the forking thread acquires each registered lock, waiting at most
  :data:`WAIT_LIMIT` seconds for all of them: the child then copies state no thread was halfway
  through changing;
* in the parent, it releases them again;
* in the child, it releases those it acquired, replaces any it could not get with a fresh lock
  (that object's state may be half-changed; counted in :data:`stats`), and calls the object's
  ``after_in_child`` hook -- a cache forgets its in-flight loads there.

A thread that forks while it holds a registered ``threading.Lock`` waits :data:`WAIT_LIMIT` for
itself (an ``RLock`` it holds is simply taken again). Standard library only; on a platform
without ``os.register_at_fork`` nothing happens.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["WAIT_LIMIT", "ForkStats", "register", "stats"]

#: The longest a fork waits for the registered locks, in seconds. Locks are held for a lookup
#: or a write (microseconds); the limit only matters if a thread holding one is itself waiting
#: on the forking thread.
WAIT_LIMIT = 0.5

_RLOCK_TYPE = type(threading.RLock())


@dataclass
class ForkStats:
    """What the forks of this process have waited for."""

    forks: int = 0
    last_wait_seconds: float = 0.0
    max_wait_seconds: float = 0.0
    locks_taken_over: int = 0  # not acquired within WAIT_LIMIT: replaced in the child


stats = ForkStats()


class _Registration:
    __slots__ = ("ref", "locks", "after_in_child", "held")

    def __init__(self, ref: weakref.ref, locks: tuple[str, ...], after_in_child: Callable[[Any], None] | None) -> None:
        self.ref = ref
        self.locks = locks
        self.after_in_child = after_in_child
        self.held: list[tuple[str, Any]] = []  # (attribute, lock) acquired for the current fork


_registry: dict[int, _Registration] = {}
_tokens = itertools.count()


def register(obj: Any, *locks: str, after_in_child: Callable[[Any], None] | None = None) -> None:
    """Guard the locks in attributes ``locks`` of ``obj`` across forks (see the module docstring);
    ``after_in_child(obj)`` runs in each forked child after its locks are free. Held weakly:
    registering does not keep ``obj`` alive."""
    token = next(_tokens)
    ref = weakref.ref(obj, lambda _, token=token: _registry.pop(token, None))
    _registry[token] = _Registration(ref, locks, after_in_child)


def _live() -> list[tuple[Any, _Registration]]:
    found = []
    for registration in list(_registry.values()):
        obj = registration.ref()
        if obj is not None:
            found.append((obj, registration))
    return found


def _before() -> None:
    started = time.monotonic()
    deadline = started + WAIT_LIMIT
    for obj, registration in _live():
        for name in registration.locks:
            lock = getattr(obj, name)
            if lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                registration.held.append((name, lock))
            else:
                stats.locks_taken_over += 1
    stats.forks += 1
    stats.last_wait_seconds = time.monotonic() - started
    stats.max_wait_seconds = max(stats.max_wait_seconds, stats.last_wait_seconds)


def _release_held() -> list[tuple[Any, _Registration, set[str]]]:
    released = []
    for obj, registration in _live():
        held = registration.held
        registration.held = []
        for _, lock in reversed(held):
            lock.release()
        released.append((obj, registration, {name for name, _ in held}))
    return released


def _after_in_parent() -> None:
    _release_held()


def _after_in_child() -> None:
    for obj, registration, released in _release_held():
        for name in registration.locks:
            if name not in released:  # another thread of the parent holds it, for ever here
                lock = getattr(obj, name)
                setattr(obj, name, threading.RLock() if isinstance(lock, _RLOCK_TYPE) else threading.Lock())
        if registration.after_in_child is not None:
            registration.after_in_child(obj)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before, after_in_parent=_after_in_parent, after_in_child=_after_in_child)
