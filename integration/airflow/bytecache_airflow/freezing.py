"""Keep the cached DAGs out of Python's automatic collections: collect, then ``gc.freeze()``.

Every automatic full (generation-2) collection walks every tracked object in the process, and a
cache of deserialized DAGs is millions of them: holding ~66 MiB of DAGs doubled the scheduler's
mean full collection (2.2 s against 1.15 s with a 1-entry cache), and those collections took
29-39% of its wall time, more than the avoided misses saved. ``gc.freeze()`` moves every object
alive at that moment into the permanent generation, which no collection walks.

:class:`HeapFreezer` is the collection the :class:`~bytecache_airflow.reclaim.Reclaimer` runs:
``gc.unfreeze(); gc.collect(); gc.freeze()`` -- everything frozen before is walked once more (so
what died since, evicted DAGs among it, is freed), and what survives is frozen again. Between
two such refreezes:

* a DAG that was cached at the last refreeze and is evicted since is frozen garbage: only the next
  refreeze frees it (the reclaimer counts its bytes apart, :attr:`Reclaimer.frozen_uncollected`);
* anything else alive at the last refreeze that died since (a loop's ORM objects in reference
  cycles) is frozen garbage too, which nothing counts: :meth:`HeapFreezer.refreeze_due` asks for a
  refreeze at least every ``max_age`` seconds, so that garbage stays one snapshot's worth;
* after the refreeze, Python's generation-2 trigger (pending survivors > a quarter of the
  survivors of the last full collection) compares against the whole heap that collection saw;
  after the next automatic one only against the unfrozen objects -- so its full collections are
  as frequent as in a process without the cache, and each walks only what is not frozen.

Between refreezes the freezer also *follows* Python's own full collections
(:meth:`HeapFreezer.follow`, from the reclaimer's maintenance step): right after one, everything
alive has just been walked and is not garbage, so ``gc.freeze()`` alone (no walk, no pause)
keeps the next automatic collections to what was promoted since. Without it they walk all that
was loaded or allocated since the last refreeze, which a refreeze every few minutes (the caps)
lets grow to most of the heap again: the scheduler's own start-up objects, its ORM state.

Someone else may freeze too: Airflow's LocalExecutor runs ``gc.freeze()`` ... fork ...
``gc.unfreeze()`` around spawning its workers, and that ``unfreeze`` undoes ours (the freeze
count drops to 0). :meth:`HeapFreezer.undone` notices; the reclaimer then refreezes at its next
allowed collection. While a foreign freeze is in progress (the count is above what we froze,
which only drops as frozen objects are freed) no refreeze starts: unfreezing would defeat it.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable

from bytecache import forksafe

__all__ = ["HeapFreezer", "FreezeWatch", "PERMANENT_FREEZE_AFTER"]

#: A foreign freeze still in place after this many seconds is an application's own (frozen at its
#: start-up and kept), not a fork's: it becomes the baseline rather than stop reclaim for good.
PERMANENT_FREEZE_AFTER = 60.0


#: Seconds between two reads of the freeze count by :meth:`HeapFreezer.refreeze_due` (each walks
#: the permanent generation): an unfreeze by someone else is noticed within this long.
FREEZE_POLL_INTERVAL = 10.0


#: How far the freeze count moves without anyone's ``gc.freeze()``: Python 3.12+ moves its immortal
#: objects (deep-frozen standard-library constants) into the permanent generation at its first
#: collection (375 in a bare 3.12.1; 0 on 3.11), so the count is never 0 there; a freeze adds every
#: tracked object allocated since the last one (a scheduler loop allocates tens of thousands).
FREEZE_NOISE = 1000


class FreezeWatch:
    """Whether someone else's ``gc.freeze()`` is in progress: the freeze count is above the
    baseline (what was frozen when we last knew nobody was freezing: immortal objects, a freeze
    made before us, our own refreeze) by more than :data:`FREEZE_NOISE`, and has not stayed there
    for :data:`PERMANENT_FREEZE_AFTER` seconds. The baseline follows the count down as frozen
    objects are freed."""

    def __init__(self, timer: Callable[[], float], baseline: int | None = None) -> None:
        self._timer = timer
        self.baseline = gc.get_freeze_count() if baseline is None else baseline
        self._above_since: float | None = None

    def rebase(self, count: int) -> None:
        self.baseline, self._above_since = count, None

    def in_progress(self, count: int | None = None) -> bool:
        """``count``: the freeze count, if the caller has just read it."""
        if count is None:
            count = gc.get_freeze_count()
        if count <= self.baseline + FREEZE_NOISE:
            self.baseline = min(self.baseline, count)
            self._above_since = None
            return False
        now = self._timer()
        if self._above_since is None:
            self._above_since = now
        elif now - self._above_since >= PERMANENT_FREEZE_AFTER:
            self.rebase(count)
            return False
        return True


class _ProcessFreeze:
    """What our refreezes did to this process's (one, shared) permanent generation."""

    epoch = 0  # refreezes so far, by any bag's freezer
    frozen_objects = 0  # the freeze count right after the last one, lowered as frozen objects are freed
    lock = threading.Lock()


forksafe.register(_ProcessFreeze, "lock")


class HeapFreezer:
    """The collection that leaves the survivors frozen, and when it is due.

    ``epoch`` counts the refreezes in this process (the permanent generation is the process's, so
    every bag's freezer shares it): an object created in epoch ``n`` is frozen once ``epoch > n``
    (unless an ``unfreeze`` by someone else undid it: :meth:`undone`).
    """

    def __init__(self, *, max_age: float = 300.0, timer: Callable[[], float]) -> None:
        if not max_age > 0:
            raise ValueError(f"max_age must be > 0 seconds, got {max_age}")
        self.max_age = max_age
        self._timer = timer
        self.refreezes = 0  # this freezer's
        self.follows = 0  # freezes after Python's own full collections (no collection of ours)
        self.undone_seen = 0  # times someone else's gc.unfreeze() undid ours
        self._frozen_at: float | None = None
        self._undone_epoch = -1
        # frozen before any refreeze of ours: immortal objects (3.12+) or someone's lasting freeze
        self._floor = gc.get_freeze_count()
        self._watch = FreezeWatch(timer, baseline=self._floor)
        self._watched_epoch = _ProcessFreeze.epoch
        self._polled_at = float("-inf")  # when refreeze_due last read the freeze count

    @property
    def epoch(self) -> int:
        return _ProcessFreeze.epoch

    @property
    def frozen_objects(self) -> int:
        return _ProcessFreeze.frozen_objects

    def collect(self) -> int:
        """Walk everything (frozen before or not), free what is garbage, freeze the survivors."""
        with _ProcessFreeze.lock:
            gc.unfreeze()
            freed = gc.collect()
            gc.freeze()
            _ProcessFreeze.frozen_objects = gc.get_freeze_count()
            _ProcessFreeze.epoch += 1
        self.refreezes += 1
        self._frozen_at = self._timer()
        return freed

    def follow(self) -> None:
        """Freeze what Python's own full collection has just left: cheap (the generations' lists
        are spliced, nothing is walked), and what survived that collection is not garbage. The
        collector then walks only what is promoted after it, instead of the whole heap again."""
        with _ProcessFreeze.lock:
            gc.freeze()
            _ProcessFreeze.frozen_objects = gc.get_freeze_count()
            _ProcessFreeze.epoch += 1
        self.follows += 1

    def undone(self) -> bool:
        """Whether an ``unfreeze`` by someone else emptied the permanent generation since the last refreeze."""
        if self._undone_epoch == self.epoch:
            return True
        floor = self._floor + FREEZE_NOISE
        if self.epoch and self.frozen_objects > floor and gc.get_freeze_count() <= floor:
            self._undone_epoch = self.epoch
            self.undone_seen += 1
            return True
        return False

    def foreign_freeze(self) -> bool:
        """Whether someone else's freeze is in progress (:class:`FreezeWatch`, rebased at every
        refreeze). What our refreeze froze only shrinks (frozen objects are freed, nothing joins
        them), so ``frozen_objects`` follows the count down -- but not to the floor an ``unfreeze``
        leaves, which :meth:`undone` must still see."""
        count = gc.get_freeze_count()
        with _ProcessFreeze.lock:
            if self._floor + FREEZE_NOISE < count <= _ProcessFreeze.frozen_objects:
                _ProcessFreeze.frozen_objects = count
            if self._watched_epoch != _ProcessFreeze.epoch:  # a refreeze (any bag's) since we looked
                self._watched_epoch = _ProcessFreeze.epoch
                self._watch.rebase(_ProcessFreeze.frozen_objects)
        return self._watch.in_progress(count)

    def refreeze_due(self) -> bool:
        """Never frozen, undone by someone else, or the last freeze is ``max_age`` seconds old.
        The freeze count is read at most every ``FREEZE_POLL_INTERVAL`` seconds here: Python
        counts the permanent generation by walking it (millions of objects after a refreeze,
        milliseconds with the GIL held), and the maintenance step asks every second."""
        now = self._timer()
        if self._frozen_at is None or self._undone_epoch == self.epoch:
            return True
        if now - self._frozen_at >= self.max_age:
            return True
        if now - self._polled_at < FREEZE_POLL_INTERVAL:
            return False
        self._polled_at = now
        if self.undone():
            return True
        self.foreign_freeze()  # follows the frees, so that a later freeze by someone else shows
        return False

    def state(self) -> dict:
        return {
            "gc_freeze": True,
            "refreezes": self.refreezes,
            "follow_freezes": self.follows,
            "frozen_objects": self.frozen_objects,
            "freeze_undone_by_others": self.undone_seen,
            "refreeze_max_age_seconds": self.max_age,
        }
