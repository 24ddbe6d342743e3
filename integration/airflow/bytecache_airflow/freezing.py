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

__all__ = ["HeapFreezer"]


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
        self.undone_seen = 0  # times someone else's gc.unfreeze() undid ours
        self._frozen_at: float | None = None
        self._undone_epoch = -1

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

    def undone(self) -> bool:
        """Whether an ``unfreeze`` by someone else emptied the permanent generation since the last refreeze."""
        if self._undone_epoch == self.epoch:
            return True
        if self.epoch and self.frozen_objects and not gc.get_freeze_count():
            self._undone_epoch = self.epoch
            self.undone_seen += 1
            return True
        return False

    def foreign_freeze(self) -> bool:
        """Whether someone else's freeze is in progress: more is frozen than when we last looked.
        What our refreeze froze only shrinks (frozen objects are freed, nothing joins them); a
        freeze adds every object of the three generations."""
        count = gc.get_freeze_count()
        with _ProcessFreeze.lock:
            if 0 < count <= _ProcessFreeze.frozen_objects:
                _ProcessFreeze.frozen_objects = count
                return False
        return count > self.frozen_objects

    def refreeze_due(self) -> bool:
        """Never frozen, undone by someone else, or the last freeze is ``max_age`` seconds old."""
        if self._frozen_at is None or self.undone():
            return True
        self.foreign_freeze()  # follows the frees, so that a later freeze by someone else shows
        return self._timer() - self._frozen_at >= self.max_age

    def state(self) -> dict:
        return {
            "gc_freeze": True,
            "refreezes": self.refreezes,
            "frozen_objects": self.frozen_objects,
            "freeze_undone_by_others": self.undone_seen,
            "refreeze_max_age_seconds": self.max_age,
        }
