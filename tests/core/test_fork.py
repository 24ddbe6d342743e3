"""A forked child inherits the cache in a usable state, whatever the parent's other threads held.

Only the forking thread exists in the child: a lock another thread held at ``os.fork()``, or a
load it had in flight, would stay held or pending there for ever. Each test forks for real; the
child does its checks and exits with a status the parent asserts (an alarm ends a deadlocked
child, which then exits by SIGALRM, not 0).
"""

import os
import signal
import threading

import pytest

from bytecache import ByteCache, forksafe
from bytecache.measure import Calibrator
from bytecache.workingset import WorkingSet

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork() is POSIX-only"),
    # forking with a second thread alive is the point here; Python 3.12+ warns about it
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

DEADLOCK_ALARM = 30  # seconds; only a deadlocked child ever reaches it


@pytest.fixture
def short_fork_wait(monkeypatch):
    # A lock held across the fork on purpose is waited for up to WAIT_LIMIT; no need for 0.5 s.
    monkeypatch.setattr(forksafe, "WAIT_LIMIT", 0.05)


def fork_and_check(child_checks) -> int:
    """Fork; in the child run ``child_checks()`` (returns an exit code) under an alarm; return
    the child's exit code in the parent."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(DEADLOCK_ALARM)
            code = child_checks()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


class HeldInAnotherThread:
    """Run ``hold(release)`` in a thread: it holds something until ``release`` is set."""

    def __init__(self, hold) -> None:
        self.holding, self.release = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=hold, args=(self.holding, self.release))

    def __enter__(self):
        self.thread.start()
        assert self.holding.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.thread.join(10)


def holding_lock(lock):
    def hold(holding, release):
        with lock:
            holding.set()
            release.wait(60)
    return hold


def test_a_child_forked_while_another_thread_holds_the_cache_lock_can_use_the_cache(short_fork_wait):
    cache = ByteCache(100, getsizeof=len)
    cache["a"] = "xx"
    taken_over = forksafe.stats.locks_taken_over

    def child() -> int:
        cache["b"] = "yyy"  # a write: takes the lock, evicts if needed
        ok = cache["a"] == "xx" and cache.get_or_load("c", lambda: "z") == "z" and cache.currsize == 6
        return 0 if ok else 1

    with HeldInAnotherThread(holding_lock(cache._lock)):
        assert fork_and_check(child) == 0
        assert forksafe.stats.locks_taken_over == taken_over + 1  # the held lock, replaced in the child
    cache["b"] = "yyy"  # the parent's lock is the parent's: released by its holder, usable again
    assert cache.currsize == 5


def test_a_load_in_flight_in_another_thread_does_not_block_the_child():
    cache = ByteCache(100, getsizeof=len)

    def hold(holding, release):
        def slow_loader():
            holding.set()
            release.wait(60)
            return "parent's"
        cache.get_or_load("k", slow_loader)

    with HeldInAnotherThread(hold):
        # the child's load runs: nobody in the child would ever finish the parent's
        assert fork_and_check(lambda: 0 if cache.get_or_load("k", lambda: "child's") == "child's" else 1) == 0
    assert cache["k"] == "parent's"  # the parent's load landed in the parent


class AnnouncingLock:
    """A lock that announces when someone starts to acquire it: the fork's before-hook."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.acquiring = threading.Event()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        self.acquiring.set()
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()


class Registered:
    """Something registered with forksafe before the cache: its lock is taken first."""

    def __init__(self) -> None:
        self.lock = AnnouncingLock()
        forksafe.register(self, "lock")


def test_a_fork_waits_for_a_lock_held_briefly_so_the_child_copies_a_finished_write():
    """A lock held for a moment (a write under way) is waited for, not taken over: the child
    sees the cache as it was after that write, never halfway through it."""
    first = Registered()
    cache = ByteCache(100, getsizeof=len)
    taken_over = forksafe.stats.locks_taken_over

    def hold(holding, release):
        with cache._lock:
            holding.set()
            first.lock.acquiring.wait(60)  # the fork has started taking the locks
            cache["written"] = "abc"

    def child() -> int:
        return 0 if cache.get("written") == "abc" and cache.currsize == 3 else 1

    with HeldInAnotherThread(hold):
        assert fork_and_check(child) == 0
    assert forksafe.stats.locks_taken_over == taken_over


@pytest.mark.parametrize("make", [lambda: Calibrator(), lambda: WorkingSet()], ids=["calibrator", "working_set"])
def test_the_other_core_locks_are_free_in_the_child(make, short_fork_wait):
    obj = make()
    with HeldInAnotherThread(holding_lock(obj._lock)):
        def child() -> int:
            if not obj._lock.acquire(blocking=False):
                return 1
            obj._lock.release()
            return 0
        assert fork_and_check(child) == 0


def test_registration_does_not_keep_a_cache_alive():
    import gc
    import weakref

    cache = ByteCache(10)
    ref = weakref.ref(cache)
    tokens = [token for token, registration in forksafe._registry.items() if registration.ref() is cache]
    assert len(tokens) == 1
    del cache
    gc.collect()
    assert ref() is None and tokens[0] not in forksafe._registry
