"""Sizes W-TinyLFU's admission window by hill climbing on the hit ratio.

A small window suits frequency-driven workloads and cyclic sweeps (window entries are pure
overhead there); a larger one suits recency-driven workloads, such as a caller that reads each key
twice in quick succession per visit (the Airflow scheduler does). Every sample period the climber
compares the hit ratio with the previous period's: if it did not get worse it keeps moving the
window the same way, otherwise it turns back. Steps shrink geometrically so the window settles,
and a large change in the hit ratio (the workload changed) restarts them at full size.
"""

from __future__ import annotations

__all__ = ["WindowClimber"]


class WindowClimber:
    def __init__(
        self,
        initial_fraction: float = 0.01,
        *,
        step: float = 0.0625,
        decay: float = 0.7,
        restart_threshold: float = 0.1,
        min_fraction: float = 0.01,
        max_fraction: float = 0.8,
    ) -> None:
        self.fraction = initial_fraction
        self.full_step = step
        self.step = step  # signed: the direction of the last move
        self.decay = decay
        self.restart_threshold = restart_threshold
        self.min_fraction = min_fraction
        self.max_fraction = max_fraction
        self.hits = 0
        self.misses = 0
        self.previous_hit_ratio: float | None = None
        self.adjustments = 0

    def record_miss(self, *, period: int) -> float | None:
        """Count a miss; at the end of a sample of ``period`` accesses return the new window fraction."""
        self.misses += 1
        if self.hits + self.misses < period:
            return None
        return self.adjust()

    def adjust(self) -> float:
        hit_ratio = self.hits / (self.hits + self.misses)
        if self.previous_hit_ratio is None:
            # The first sample only sets the baseline: it mostly measures the cache filling up.
            self.previous_hit_ratio = hit_ratio
            self.hits = self.misses = 0
            return self.fraction
        change = hit_ratio - self.previous_hit_ratio
        amount = self.step if change >= 0 else -self.step
        if abs(change) >= self.restart_threshold:
            self.step = self.full_step if amount >= 0 else -self.full_step
        else:
            self.step = amount * self.decay
        self.fraction = min(self.max_fraction, max(self.min_fraction, self.fraction + amount))
        self.previous_hit_ratio = hit_ratio
        self.hits = self.misses = 0
        self.adjustments += 1
        return self.fraction
