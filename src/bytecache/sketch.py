"""A count-min sketch of access frequencies with periodic halving (the "TinyLFU" part of W-TinyLFU).

Four rows of 4-bit counters (stored one per byte, saturating at 15). A key maps to one counter per
row; its estimate is the smallest of the four. Increments are conservative (only the counters at
the minimum grow), which keeps collisions from inflating the estimates of cold keys. After
``sample_size`` increments every counter is halved, so the sketch reflects recent popularity rather
than all history.
"""

from __future__ import annotations

__all__ = ["FrequencySketch"]

_ROWS = 4
_MAX_COUNT = 15
_MASK64 = (1 << 64) - 1
_SEEDS = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93)
# halving one byte per counter, done by bytes.translate in C rather than a Python loop.
_HALVE = bytes(i >> 1 for i in range(256))


def _mix(x: int) -> int:
    """SplitMix64's finalizer: every input bit affects every output bit (Python's int hash is the
    identity, so without this consecutive keys would share counters)."""
    x &= _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _next_power_of_two(n: int) -> int:
    return 1 << max(n - 1, 1).bit_length()


class FrequencySketch:
    """Estimates how often each key was seen recently, in a few bytes per key."""

    def __init__(self, capacity: int = 16, *, sample_factor: int = 10) -> None:
        self.sample_factor = sample_factor
        self.resize(capacity)

    def resize(self, capacity: int) -> None:
        """Size for ``capacity`` distinct keys. Forgets all counts (callers re-derive slots)."""
        capacity = _next_power_of_two(max(capacity, 16))
        # Four counters per row for each key the cache holds: the sketch also remembers keys that
        # are not resident, and a narrower table lets collisions drown the estimates.
        self.width = 4 * capacity
        self.table = bytearray(_ROWS * self.width)
        self.sample_size = self.sample_factor * self.width
        self.additions = 0
        self.halvings = 0

    def slots(self, key: object) -> tuple[int, int, int, int]:
        """The key's four counter positions. Compute once per key and pass to the other methods."""
        mask = self.width - 1
        out = []
        for row, seed in enumerate(_SEEDS):
            out.append(row * self.width + (_mix(hash(key) + seed) & mask))
        return tuple(out)  # type: ignore[return-value]

    def frequency(self, slots: tuple[int, int, int, int]) -> int:
        t = self.table
        a, b, c, d = slots
        return min(t[a], t[b], t[c], t[d])

    def increment(self, slots: tuple[int, int, int, int]) -> bool:
        """Count one access; True if it completed a sample period and every count was halved."""
        t = self.table
        a, b, c, d = slots
        ta, tb, tc, td = t[a], t[b], t[c], t[d]
        low = ta if ta < tb else tb
        if tc < low:
            low = tc
        if td < low:
            low = td
        if low >= _MAX_COUNT:
            return False
        # Conservative update: only the counters at the minimum grow, so a key that shares a
        # counter with a hot key does not inherit its count.
        if ta == low:
            t[a] = low + 1
        if tb == low:
            t[b] = low + 1
        if tc == low:
            t[c] = low + 1
        if td == low:
            t[d] = low + 1
        self.additions += 1
        if self.additions >= self.sample_size:
            self.halve()
            return True
        return False

    def halve(self) -> None:
        """Age every count by half so that old popularity fades."""
        self.table = self.table.translate(_HALVE)
        self.additions //= 2
        self.halvings += 1
