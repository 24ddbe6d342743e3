"""Ghosts: the keys (and weights) of entries a policy recently let go, without their values.

A later miss on a ghost key is evidence that a little more room in the segment it left would have
turned that miss into a hit. Bounded both in weight (the extra room it stands for) and in keys (so a
budget of many tiny entries cannot grow it without limit); the oldest keys are forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Hashable

__all__ = ["Ghost"]


class Ghost:
    def __init__(self, max_weight: int = 0, max_keys: int = 64) -> None:
        self._keys: OrderedDict[Hashable, tuple[int, int]] = OrderedDict()
        self.weight = 0
        self.max_weight = max_weight
        self.max_keys = max_keys

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._keys

    def add(self, key: Hashable, weight: int, stamp: int = 0) -> None:
        """Remember ``key`` with its ``weight`` and a ``stamp`` of the caller's choosing."""
        old = self._keys.pop(key, None)
        if old is not None:
            self.weight -= old[0]
        self._keys[key] = (weight, stamp)
        self.weight += weight
        self.trim()

    def pop(self, key: Hashable) -> tuple[int, int] | None:
        """``(weight, stamp)`` remembered for ``key`` (forgetting it), or None if it is not a ghost."""
        found = self._keys.pop(key, None)
        if found is not None:
            self.weight -= found[0]
        return found

    def bound(self, max_weight: int, max_keys: int) -> None:
        self.max_weight, self.max_keys = max_weight, max_keys
        self.trim()

    def trim(self) -> None:
        keys = self._keys
        while keys and (self.weight > self.max_weight or len(keys) > self.max_keys):
            _, (weight, _) = keys.popitem(last=False)
            self.weight -= weight

    def clear(self) -> None:
        self._keys.clear()
        self.weight = 0
