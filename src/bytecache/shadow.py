"""A shadow LRU: the keys (and weights) a plain LRU cache of the same budget would hold now, and a
running score of which of the two -- that LRU or the policy -- has been hitting more.

No values, only keys in recency order, trimmed to the budget from the least recent end. The policy
tells it about every use of a key: on the policy's miss, whether an LRU of its size would have had
the key (recency alone would have turned that miss into a hit); on the policy's hit, whether that
LRU would have missed. ``lead`` adds the bytes of the first kind and subtracts those of the second
(bounded by half the budget either way), so it is positive while plain LRU has been the better
cache: the signal that lets a frequency policy fall back to recency on traces where frequency
has nothing to say (LeCaR and Cacheus compare experts the same way). The lead does not fade with
time: once the policy has become that LRU the two hit alike and the last verdict stands (a fading
lead made the policy leave LRU every sample period to try again, and each try cost misses); the
policy revises it with its own evidence instead (``credit_policy``: a miss on a key its frequency
judgment would have kept).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Hashable

__all__ = ["ShadowLRU", "LEAD_MARGIN", "LEAD_BOUND"]

# ``ahead`` needs the lead to pass this share of the budget: a few lucky LRU hits while the
# cache warms up (Zipf: a few hundred requests in 100,000) must not flip the policy. The highest
# such lead on the trace matrix is 2.0% of the budget (Zipf 0.8 at 5%, unit weights), so 3% keeps
# half as much again in hand; 5% made short traces, whose LRU wins come a few entries at a time,
# turn to LRU too late (quick-soak and soak-43mib at 75%: 65.9/75.8 -> 67.9/76.6 byte hit %, LRU
# 69.3/78.5); 2% flipped Zipf 0.8 at 5% (40.4 -> 40.3 object %, W-TinyLFU 42.3).
LEAD_MARGIN = 0.03
# The lead is bounded either way by this share of the budget, so that the policy's early wins
# (while a cache fills, keeping old keys beats LRU) do not take a whole budget of LRU wins to
# outweigh; half a budget: the soak traces' warm-ups turn to LRU in time (quick-soak at 25%:
# 30.8 -> 36.1 byte hit %, LRU 35.3), no other cell of the matrix moves by more than 0.7 points.
LEAD_BOUND = 0.5


class ShadowLRU:
    def __init__(self, max_weight: int) -> None:
        self.keys: OrderedDict[Hashable, int] = OrderedDict()  # least recent first
        self.weight = 0
        self.max_weight = max_weight
        self.lead = 0

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key: Hashable) -> bool:
        return key in self.keys

    @property
    def ahead(self) -> bool:
        """Whether plain LRU has lately hit clearly more bytes than the policy."""
        return self.lead > self.max_weight * LEAD_MARGIN

    def record_miss(self, key: Hashable, weight: int) -> bool:
        """The policy missed ``key`` and stores it: True if an LRU of this budget held it."""
        keys = self.keys
        old = keys.pop(key, None)
        keys[key] = weight
        self.weight += weight - (old or 0)
        if self.weight > self.max_weight:
            self._trim()
        if old is None:
            return False
        self._score(weight)
        return True

    def record_hit(self, key: Hashable, weight: int) -> None:
        """The policy hit ``key``. The caller moves a key the LRU holds to the recent end itself
        (``keys.move_to_end``: the hit path's only cost); this is for a key the LRU does not hold,
        a hit recency alone would have missed."""
        keys = self.keys
        if key in keys:
            keys.move_to_end(key)
            return
        keys[key] = weight
        self.weight += weight
        if self.weight > self.max_weight:
            self._trim()
        self._score(-weight)

    def credit_policy(self, weight: int) -> None:
        """A miss LRU made too, on a key the policy's own judgment would have kept: score it as
        the policy's hit."""
        self._score(-weight)

    def depth(self, key: Hashable) -> int | None:
        """The weight of the keys used since ``key`` (None if an LRU would not hold it): the room
        a recency-ordered space needs to have kept ``key`` until now."""
        keys = self.keys
        if key not in keys:
            return None
        total = 0
        for other in reversed(keys):
            if other == key:
                return total
            total += keys[other]
        raise AssertionError("unreachable: the key is in the shadow")

    def reweigh(self, key: Hashable, weight: int) -> None:
        """The value under ``key`` changed weight in place: not a use, recency unchanged."""
        old = self.keys.get(key)
        if old is not None:
            self.keys[key] = weight
            self.weight += weight - old
            if self.weight > self.max_weight:
                self._trim()

    def discard(self, key: Hashable) -> None:
        """The key is gone for any cache (deleted, expired): an LRU would not have it either."""
        old = self.keys.pop(key, None)
        if old is not None:
            self.weight -= old

    def _score(self, weight: int) -> None:
        bound = self.max_weight * LEAD_BOUND
        self.lead = max(-bound, min(bound, self.lead + weight))

    def _trim(self) -> None:
        keys = self.keys
        # The most recent key stays even if it alone is over the budget, as an LRU's write would.
        while self.weight > self.max_weight and len(keys) > 1:
            _, weight = keys.popitem(last=False)
            self.weight -= weight

    def clear(self) -> None:
        self.keys.clear()
        self.weight = 0
        self.lead = 0
