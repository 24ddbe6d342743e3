"""How much memory values really take, measured rarely and turned into a cheap weighing model.

A deep measurement walks every object a value reaches; for a large deserialized DAG that costs
about as much as deserializing it. So the ``Calibrator`` measures only a sample of values, within
a share of the time, and fits a :class:`LinearFit` -- bytes in memory as a linear function of a
few cheap features of a value (a fixed cost, bytes of its serialized form, counts of its parts);
weighing a new value is then a handful of multiplications.

``deep_sizeof`` uses pympler's ``asizeof`` when it is installed (``pip install bytecache[pympler]``)
and otherwise walks ``gc.get_referents`` itself.
"""

from __future__ import annotations

import builtins
import gc
import sys
import threading
import time
import types
from typing import Any, Callable, Iterable, Mapping

from . import forksafe

__all__ = ["deep_sizeof", "walk_sizeof", "LinearFit", "Calibrator"]

# Shared, process-wide objects a value may reference but does not own.
_SHARED_TYPES = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.CodeType)

_pympler_asizeof: Callable[[Any], int] | None = None
_pympler_checked = False


def _pympler() -> Callable[[Any], int] | None:
    # Imported on first use, not at import: pympler pulls in numpy (about 11 MB of RSS), which a
    # process that only ever weighs with the stdlib walker should not pay for.
    global _pympler_asizeof, _pympler_checked
    if not _pympler_checked:
        try:  # pragma: no cover - depends on the optional extra
            from pympler.asizeof import asizeof as _pympler_asizeof
        except ImportError:  # pragma: no cover
            _pympler_asizeof = None
        _pympler_checked = True
    return _pympler_asizeof


def deep_sizeof(obj: Any, *, use_pympler: bool | None = None) -> int:
    """Bytes taken by ``obj`` and everything it references (classes, modules and functions excepted).

    ``use_pympler``: None uses pympler when it is installed, False always walks
    ``gc.get_referents`` (stdlib, faster, less memory while it runs), True requires pympler."""
    asizeof = _pympler() if use_pympler is not False else None
    if use_pympler and asizeof is None:
        raise ImportError("deep_sizeof(use_pympler=True) needs pympler: pip install 'bytecache[pympler]'")
    if asizeof is not None:
        return int(asizeof(obj))
    return walk_sizeof(obj)


#: ``type.__flags__`` bit of classes whose instances keep their attributes in a "managed"
#: ``__dict__`` (CPython 3.11+): until something asks for ``obj.__dict__``, the attribute values
#: live in an array next to the object that ``sys.getsizeof`` does not count.
_MANAGED_DICT = 1 << 4
#: pymalloc (and glibc's malloc) hand out memory in 16-byte steps on 64-bit builds.
_ALLOCATION_STEP = 16


def walk_sizeof(obj: Any) -> int:
    """``deep_sizeof`` by the stdlib walker: ``sys.getsizeof`` of everything reachable through
    ``gc.get_referents``, each rounded up to the allocator's 16-byte step, plus the attribute
    values array of instances whose ``__dict__`` was never materialized (measured on Airflow
    3.3.2 DAGs: within 5% of pympler for DAGs of 50 tasks and more, which pympler pushes up by
    materializing every ``__dict__`` it visits). 3-5x faster than pympler, half its memory while
    it runs: what a long-running process calibrates with.

    Like classes and modules, the objects they hold -- a class's attributes and its bases', the
    globals of the modules defining them (a default ``frozenset``, a descriptor, a ``UTC``
    singleton) -- are process-wide, whichever instance also points at them: they are neither
    counted nor walked into. Counting them per value would charge every value for them
    (measured: ~1.4 kB of a 23 kB Airflow DAG of 5 tasks, more once its tasks cached a method
    through ``methodtools``), while the values together hold them once."""
    seen: set[int] = set()
    classes_seen: set[int] = set()
    total = 0
    stack = [obj]
    step = _ALLOCATION_STEP
    while stack:
        item = stack.pop()
        if id(item) in seen or isinstance(item, _SHARED_TYPES):
            continue
        cls = type(item)
        if id(cls) not in classes_seen:
            classes_seen.add(id(cls))
            seen.update(_class_attribute_ids(cls))
            if id(item) in seen:
                continue  # held by its own class: an enum member, a singleton
        seen.add(id(item))
        referents = gc.get_referents(item)
        size = sys.getsizeof(item)
        if type(item).__flags__ & _MANAGED_DICT and not (len(referents) == 2 and type(referents[0]) is dict):
            # inline values (one pointer per attribute, the type is the last referent) + their header
            size += 8 * (len(referents) - 1) + 8
        total += -(-size // step) * step
        stack.extend(referents)
    return total


def _class_attribute_ids(cls: type) -> list[int]:
    """Ids of what ``cls``, its bases and the modules defining them hold (process-wide objects)."""
    holders = []
    for klass in cls.__mro__:
        holders.append(vars(klass))
        module = sys.modules.get(getattr(klass, "__module__", None) or "")
        if module is not None and module is not builtins:
            holders.append(vars(module))
    return [id(value) for holder in holders for value in list(holder.values())]


Features = Mapping[str, float]


class LinearFit:
    """Predicts a value's bytes as ``sum(coefficient[f] * features[f])`` over named features.

    Fitted by least squares on *relative* errors (each sample weighs the same whether it is 5 kB
    or 50 MB, so small values are fitted as well as big ones), with every coefficient shrunk
    towards its prior (so a feature seen in few samples, or in none, keeps a sane coefficient)
    and kept >= 0. Samples are blended: each new one is added to decayed sums of the earlier
    ones (``decay`` per sample), never replacing them. A feature's prior comes from ``prior`` or,
    for names not in it, from ``prior_for(name)`` (0 if neither knows it).
    """

    def __init__(
        self,
        prior: Mapping[str, float],
        *,
        prior_for: Callable[[str], float] | None = None,
        prior_weight: float = 0.05,
        decay: float = 0.99,
    ) -> None:
        for name, value in prior.items():
            if not (isinstance(value, (int, float)) and value >= 0):
                raise ValueError(f"prior[{name!r}] must be a number >= 0, got {value!r}")
        if not prior_weight > 0:
            raise ValueError(f"prior_weight must be > 0, got {prior_weight!r}")
        if not 0 < decay <= 1:
            raise ValueError(f"decay must be in (0, 1], got {decay!r}")
        self.prior = dict(prior)
        self.prior_for = prior_for
        self.prior_weight = prior_weight
        self.decay = decay
        self.samples = 0
        self._xx: dict[tuple[str, str], float] = {}  # decayed sums of x_j * x_k / y^2
        self._xy: dict[str, float] = {}  # decayed sums of x_j / y
        self._names: list[str] = list(self.prior)
        self.coefficients: dict[str, float] = dict(self.prior)
        self.feature_samples: dict[str, int] = {}  # samples in which each feature was non-zero

    def prior_of(self, name: str) -> float:
        if name in self.prior:
            return self.prior[name]
        return float(self.prior_for(name)) if self.prior_for is not None else 0.0

    def predict(self, features: Features) -> float:
        coefficients = self.coefficients
        total = 0.0
        for name, x in features.items():
            c = coefficients.get(name)
            total += x * (self.prior_of(name) if c is None else c)
        return total

    def add(self, features: Features, measured: float) -> None:
        """One sample: ``features`` of a value that measured ``measured`` bytes."""
        if measured <= 0:
            return
        xs = {name: float(x) for name, x in features.items() if x}
        if not xs:
            return
        if self.decay < 1:
            for key in self._xx:
                self._xx[key] *= self.decay
            for key in self._xy:
                self._xy[key] *= self.decay
        for name in xs:
            if name not in self._names:
                self._names.append(name)
            self.feature_samples[name] = self.feature_samples.get(name, 0) + 1
        inv = 1.0 / measured
        for j, xj in xs.items():
            self._xy[j] = self._xy.get(j, 0.0) + xj * inv
            for k, xk in xs.items():
                self._xx[j, k] = self._xx.get((j, k), 0.0) + xj * xk * inv * inv
        self.samples += 1
        self.coefficients = self._solve()

    def _solve(self) -> dict[str, float]:
        # minimise sum_i ((x_i . c - y_i) / y_i)^2 + prior_weight * sum_j ((c_j - p_j) / s_j)^2,
        # s_j = p_j (or 1 for a zero prior); a coefficient that comes out negative is pinned to 0
        # and the rest solved again.
        free = list(self._names)
        pinned: set[str] = set()
        while True:
            solution = self._solve_for(free)
            negative = [name for name in free if solution[name] < 0]
            if not negative:
                break
            worst = min(negative, key=lambda name: solution[name])
            free.remove(worst)
            pinned.add(worst)
        solution.update({name: 0.0 for name in pinned})
        return solution

    def _solve_for(self, names: list[str]) -> dict[str, float]:
        n = len(names)
        matrix = [[self._xx.get((j, k), 0.0) for k in names] for j in names]
        rhs = [self._xy.get(j, 0.0) for j in names]
        for i, name in enumerate(names):
            p = self.prior_of(name)
            scale = p if p > 0 else 1.0
            matrix[i][i] += self.prior_weight / (scale * scale)
            rhs[i] += self.prior_weight * p / (scale * scale)
        return dict(zip(names, _solve_linear(matrix, rhs))) if n else {}

    def state(self) -> dict:
        return {
            "model": "linear",
            "coefficients": dict(self.coefficients),
            "prior": dict(self.prior),
            "samples": self.samples,
            "feature_samples": dict(self.feature_samples),
            "decay": self.decay,
            "prior_weight": self.prior_weight,
        }


def _solve_linear(matrix: list[list[float]], rhs: list[float]) -> list[float]:
    """Solve ``matrix @ x = rhs`` (small, symmetric positive definite) by Gaussian elimination."""
    n = len(rhs)
    a = [row[:] + [rhs[i]] for i, row in enumerate(matrix)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        a[col], a[pivot] = a[pivot], a[col]
        if a[col][col] == 0:
            raise ZeroDivisionError("singular system")
        for r in range(col + 1, n):
            f = a[r][col] / a[col][col]
            if f:
                for c in range(col, n + 1):
                    a[r][c] -= f * a[col][c]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        x[r] = (a[r][n] - sum(a[r][c] * x[c] for c in range(r + 1, n))) / a[r][r]
    return x


class Calibrator:
    """Fits a :class:`LinearFit` of real memory from sampled deep measurements.

    It measures the first ``warmup`` values it is shown, then one in ``every``, and any value with
    a feature fewer than ``min_feature_samples`` samples have shown (a new kind of value is
    measured soon, not after ``every`` others); after the warm-up it skips a sample whenever
    measuring has already taken more than ``max_time_share`` of the time since the calibrator was
    created, so the cost stays bounded whatever the values weigh. A value is described by its
    features (a mapping), or by a single proxy size (an int: the feature ``"bytes"``, for which
    the default model is 4 bytes in memory per proxy byte).
    """

    def __init__(
        self,
        *,
        model: LinearFit | None = None,
        warmup: int = 5,
        every: int = 50,
        measure: Callable[[Any], int] = deep_sizeof,
        max_time_share: float = 0.05,
        min_feature_samples: int = 0,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        if isinstance(min_feature_samples, bool) or not isinstance(min_feature_samples, int) or min_feature_samples < 0:
            raise ValueError(f"min_feature_samples must be an int >= 0, got {min_feature_samples!r}")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an int >= 1, got {every!r}")
        if not 0 < max_time_share <= 1:
            raise ValueError(f"max_time_share must be in (0, 1], got {max_time_share!r}")
        self.model = model if model is not None else LinearFit({"bytes": 4.0})
        self.warmup = warmup
        self.every = every
        self.measure = measure
        self.max_time_share = max_time_share
        self.min_feature_samples = min_feature_samples
        self.timer = timer
        self._lock = threading.Lock()
        forksafe.register(self, "_lock")
        self._started = timer()
        self.seen = 0
        self.skipped_for_time = 0
        self.measured_bytes = 0
        self.proxy_bytes = 0
        self.seconds_measuring = 0.0
        self.coverage_samples: dict[str, int] = {}

    @property
    def samples(self) -> int:
        return self.model.samples

    @property
    def ratio(self) -> float | None:
        """Bytes in memory per ``"bytes"`` feature over all samples, or None before the first one."""
        with self._lock:
            return self.measured_bytes / self.proxy_bytes if self.proxy_bytes else None

    def weight(self, features: Features | int) -> int:
        with self._lock:
            return max(0, round(self.model.predict(_as_features(features))))

    def should_sample(self, features: Features | int | None = None, coverage: Iterable[str] = ()) -> bool:
        """Count one value and say whether to measure it. With its ``features`` (or ``coverage``
        keys, for finer kinds than features tell apart, e.g. size ranges), a value of a kind
        fewer than ``min_feature_samples`` samples have shown is measured out of turn."""
        with self._lock:
            self.seen += 1
            if self.seen <= self.warmup:
                return True
            if (self.seen - self.warmup) % self.every and not self._uncovered(features, coverage):
                return False
            elapsed = self.timer() - self._started
            if self.seconds_measuring > self.max_time_share * elapsed:
                self.skipped_for_time += 1
                return False
            return True

    def _uncovered(self, features: Features | int | None, coverage: Iterable[str]) -> bool:
        if not self.min_feature_samples:
            return False
        least = self.min_feature_samples
        if any(self.coverage_samples.get(key, 0) < least for key in coverage):
            return True
        if features is None:
            return False
        counts = self.model.feature_samples
        return any(x and counts.get(name, 0) < least for name, x in _as_features(features).items())

    def record(self, measured_bytes: int, features: Features | int, seconds: float = 0.0, coverage: Iterable[str] = ()) -> None:
        """Add one measurement (blended with the earlier ones)."""
        features = _as_features(features)
        with self._lock:
            self.seconds_measuring += seconds
            if measured_bytes <= 0 or not any(features.values()):
                return
            self.model.add(features, measured_bytes)
            for key in coverage:
                self.coverage_samples[key] = self.coverage_samples.get(key, 0) + 1
            if features.get("bytes"):
                self.measured_bytes += measured_bytes
                self.proxy_bytes += int(features["bytes"])

    def measure_and_record(self, obj: Any, features: Features | int, coverage: Iterable[str] = ()) -> int:
        """Measure ``obj`` now (the caller decided it is a sample); return the bytes measured."""
        start = self.timer()
        measured = self.measure(obj)
        self.record(measured, features, self.timer() - start, coverage)
        return measured

    def observe(self, obj: Any, features: Features | int) -> bool:
        """Show the calibrator a value and its features; returns True if it was measured."""
        if not any(_as_features(features).values()) or not self.should_sample(features):
            return False
        self.measure_and_record(obj, features)
        return True

    def state(self) -> dict:
        with self._lock:
            return {
                **self.model.state(),
                "seen": self.seen,
                "skipped_for_time": self.skipped_for_time,
                "seconds_measuring": self.seconds_measuring,
                "coverage_samples": dict(self.coverage_samples),
                "ratio": self.measured_bytes / self.proxy_bytes if self.proxy_bytes else None,
            }


def _as_features(features: Features | int) -> Features:
    if isinstance(features, Mapping):
        return features
    return {"bytes": features}
