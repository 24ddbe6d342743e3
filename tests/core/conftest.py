import pytest
from hypothesis import Phase, settings

# For tests/mutation_check.py: a mutant needs a verdict, not a minimal failing example; the same
# examples for every mutant and every run (derandomized), none saved from another mutant.
settings.register_profile(
    "mutation-check", phases=[Phase.explicit, Phase.generate], database=None, derandomize=True
)


class FakeClock:
    """A monotonic clock the test advances by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def snapshot(cache):
    """Everything observable about a cache, to check that a failed call changed nothing."""
    with cache._lock:
        entries = [(k, e.value, e.weight, e.accessed) for k, e in cache._data.items()]
    return entries, cache.currsize, cache.stats()
