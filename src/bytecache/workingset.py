"""How many bytes a reader needs cached: the weight of the distinct keys it read within its last sweep,
whether the cache still holds them or not.

A reader that sweeps its keys round-robin (the Airflow scheduler visits every running DAG run in
turn) comes back to a key it still uses after one sweep; a key it stopped using (a superseded DAG
version) is not read again. So the sweep window is learnt from the reader itself: the gaps between
consecutive reads of the same key, of which a high quantile is the time one sweep takes. (A reader
that looks a key up twice per visit adds short gaps too; the quantile is taken above them.) The
working set is then the keys read within that window, each with the weight it had when last loaded.

Bookkeeping is one dict entry per remembered key (``BYTES_PER_KEY`` beside the key object itself):
``touch`` on a hit is a dict lookup and a float store; ``record`` on a load stores the weight;
``estimate`` (maintenance, not the read path) prunes keys idle for longer than ``keep`` windows
(and at least ``min_keep`` seconds) and, past ``max_keys``, the least recently read.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from typing import Hashable, NamedTuple

from . import forksafe

__all__ = ["WorkingSet", "WorkingSetEstimate"]


class WorkingSetEstimate(NamedTuple):
    bytes: int
    entries: int
    window: float | None  # seconds; None until a key has been read twice


class WorkingSet:
    def __init__(
        self,
        *,
        max_keys: int = 100_000,
        quantile: float = 0.95,
        samples: int = 4096,
        keep: float = 3.0,
        slack: float = 1.25,
        min_keep: float = 3600.0,
    ) -> None:
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ValueError(f"max_keys must be a whole number >= 1, got {max_keys!r}")
        if not 0.5 <= quantile < 1:
            raise ValueError(f"quantile must be in [0.5, 1), got {quantile!r}")
        if keep < 1:
            raise ValueError(f"keep must be >= 1 (windows), got {keep!r}")
        if slack < 1:
            raise ValueError(f"slack must be >= 1, got {slack!r}")
        if not min_keep >= 0:
            raise ValueError(f"min_keep must be >= 0 seconds, got {min_keep!r}")
        # Pruning by the learnt window alone would feed on itself: a key dropped before it comes
        # back never shows the long gap, so early short gaps (a second lookup) would keep the
        # window short. Keys are kept at least ``min_keep`` seconds (the cache's idle TTL, say).
        self.min_keep = min_keep
        self.max_keys = max_keys
        self.quantile = quantile
        self.keep = keep
        # A key read once per sweep is up to one sweep old when it is read again, and sweeps vary:
        # a quarter sweep of slack keeps a key that is due now in the set.
        self.slack = slack
        self._keys: dict[Hashable, list] = {}  # key -> [last read, weight]
        self._gaps: deque[float] = deque(maxlen=samples)
        # readers touch while a maintenance thread estimates (and prunes)
        self._lock = threading.Lock()
        forksafe.register(self, "_lock")

    def __len__(self) -> int:
        return len(self._keys)

    def touch(self, key: Hashable, now: float) -> None:
        """A read of ``key`` (hit or miss)."""
        with self._lock:
            seen = self._keys.get(key)
            if seen is None:
                self._keys[key] = [now, 0]
                return
            gap = now - seen[0]
            if gap > 0:
                self._gaps.append(gap)
            seen[0] = now

    def record(self, key: Hashable, weight: int, now: float) -> None:
        """``key`` was loaded (and weighed) at ``now``; counts as a read."""
        with self._lock:
            self._keys.setdefault(key, [now, 0])[1] = weight
        self.touch(key, now)

    def weight_of(self, key: Hashable) -> int | None:
        """The weight ``key`` was last recorded with (None if it is not remembered)."""
        with self._lock:
            seen = self._keys.get(key)
            return seen[1] if seen is not None else None

    def forget(self, key: Hashable) -> None:
        with self._lock:
            self._keys.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._keys.clear()
            self._gaps.clear()

    def window(self) -> float | None:
        """The sweep window: the ``quantile`` of the recent gaps between reads of one key, with slack."""
        if not self._gaps:
            return None
        gaps = sorted(self._gaps)
        return self.slack * gaps[min(len(gaps) - 1, math.ceil(self.quantile * len(gaps)) - 1)]

    def estimate(self, now: float) -> WorkingSetEstimate:
        """The keys read within the last window and their weight; prunes what is long idle."""
        with self._lock:
            return self._estimate(now)

    def _estimate(self, now: float) -> WorkingSetEstimate:
        window = self.window()
        keys = self._keys
        if window is None:  # no key read twice yet: everything read so far
            return WorkingSetEstimate(sum(w for _, w in keys.values()), len(keys), None)
        horizon = now - max(self.keep * window, self.min_keep)
        for key in [k for k, (last, _) in keys.items() if last < horizon]:
            del keys[key]
        if len(keys) > self.max_keys:
            newest = sorted(keys.items(), key=lambda item: item[1][0])[-self.max_keys :]
            self._keys = keys = dict(newest)
        start = now - window
        total = entries = 0
        for last, weight in keys.values():
            if last >= start:
                total += weight
                entries += 1
        return WorkingSetEstimate(total, entries, window)


def _bytes_per_key() -> int:
    import sys

    record = [0.0, 0]
    # dict slot (hash, key, value pointers, plus index) + the list + its float
    return 3 * 8 + 8 + sys.getsizeof(record) + sys.getsizeof(0.5)


BYTES_PER_KEY = _bytes_per_key()
