"""Request traces for the benchmarks: the two public LIRS traces and seeded synthetic weighted traces.

A trace is a list of ``(key, weight)`` pairs, one per request, in request order. A key's weight is
the bytes its value would occupy (1 for the unit-weight LIRS traces). Every generator here is
deterministic: it draws only from ``random.Random(seed)`` (standard library), so the same seed
gives the same trace on every machine.

Standard library only, so that ``replay`` of a recorded trace needs nothing else.
"""

from __future__ import annotations

import gzip
import itertools
import math
import os
import random
from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

__all__ = [
    "TRACE_DIR",
    "LIRS_CAPACITIES",
    "Workload",
    "load_lirs",
    "dag_weights",
    "unit_weights",
    "log_uniform_weights",
    "uniform_weights",
    "cyclic_sweep",
    "zipf",
    "version_churn",
    "scheduler_sweep",
    "scheduler_loops",
    "synthetic_workloads",
    "total_weight",
]

TRACE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "traces")

# Capacities (in entries) at which the LIRS traces are conventionally reported; see traces/README.md.
LIRS_CAPACITIES = {"loop": (256, 512, 768), "gli": (250, 500, 1000, 1500)}

KB = 1000
MB = 1000 * 1000


@dataclass(frozen=True)
class Workload:
    """A named trace with the byte budget to replay it at."""

    name: str
    trace: list  # [(key, weight), ...]
    budget: int
    note: str = ""
    ttl: int | None = None  # idle TTL for our cache, in requests (one request = one clock tick)


def load_lirs(name: str, directory: str = TRACE_DIR) -> list[tuple[int, int]]:
    """Load ``<name>.trace.gz`` (one integer key per line, ``*`` lines skipped) as weight-1 requests."""
    path = os.path.join(directory, f"{name}.trace.gz")
    trace = []
    with gzip.open(path, "rt") as f:
        for line in f:
            s = line.strip()
            if s and s != "*":
                trace.append((int(s), 1))
    return trace


def total_weight(trace: Sequence[tuple[Hashable, int]]) -> int:
    """The bytes of all distinct keys (the working set) of a trace; a key weighs its last weight."""
    return sum(dict(trace).values())


def dag_weights(n: int, rng: random.Random) -> list[int]:
    """``n`` heavy-tailed object sizes shaped like deserialized Airflow DAGs, 50 KB to 20 MB.

    85% are log-normal around 200 KB (sigma 0.8, i.e. most between ~90 KB and ~450 KB); 15% are
    "big DAGs", log-uniform between 1 MB and 20 MB. Everything is clipped to [50 KB, 20 MB]. About
    half of the bytes sit in the big 15%.
    """
    out = []
    for _ in range(n):
        if rng.random() < 0.85:
            w = 200 * KB * math.exp(rng.gauss(0.0, 0.8))
        else:
            w = math.exp(rng.uniform(math.log(1 * MB), math.log(20 * MB)))
        out.append(int(min(max(w, 50 * KB), 20 * MB)))
    return out


# A weight generator: ``weigh(n, rng)`` -> ``n`` weights drawn from ``rng``.
Weigh = Callable[[int, random.Random], list[int]]


def unit_weights(n: int, rng: random.Random) -> list[int]:
    """Weight 1 for every key (a capacity counted in entries); draws nothing from ``rng``."""
    return [1] * n


def log_uniform_weights(lo: int, hi: int) -> Weigh:
    """Weights log-uniform between ``lo`` and ``hi`` bytes (as many keys per decade)."""
    def weigh(n: int, rng: random.Random) -> list[int]:
        return [int(math.exp(rng.uniform(math.log(lo), math.log(hi)))) for _ in range(n)]
    return weigh


def uniform_weights(lo: int, hi: int) -> Weigh:
    """Weights uniform between ``lo`` and ``hi`` bytes, inclusive."""
    def weigh(n: int, rng: random.Random) -> list[int]:
        return [rng.randint(lo, hi) for _ in range(n)]
    return weigh


def cyclic_sweep(n_keys: int, passes: int, *, seed: int = 1, weigh: Weigh = dag_weights) -> list[tuple[int, int]]:
    """Keys 0..n-1 requested in the same order, ``passes`` times (the scheduler's DAG sweep)."""
    weights = weigh(n_keys, random.Random(seed))
    one_pass = list(zip(range(n_keys), weights))
    return one_pass * passes


def _zipf_cum(n: int, alpha: float) -> list[float]:
    return list(itertools.accumulate(1.0 / (i ** alpha) for i in range(1, n + 1)))


def zipf(n_keys: int, n_requests: int, alpha: float, *, seed: int = 2,
         weigh: Weigh = dag_weights) -> list[tuple[int, int]]:
    """Independent requests, key popularity Zipf(alpha); a key's weight does not depend on its rank."""
    rng = random.Random(seed)
    weights = weigh(n_keys, rng)
    ranks = rng.choices(range(n_keys), cum_weights=_zipf_cum(n_keys, alpha), k=n_requests)
    return [(r, weights[r]) for r in ranks]


def version_churn(
    n_dags: int, n_requests: int, *, alpha: float = 0.9, p_new_version: float = 0.01, seed: int = 3,
    weigh: Weigh = dag_weights,
) -> list[tuple[tuple[int, int], int]]:
    """Keys superseded over time: DAG popularity is Zipf(alpha); before a request, with probability
    ``p_new_version`` the requested DAG gets a new version (a new key ``(dag, version)``, weight
    within +-10% of the DAG's base weight). Old versions are never requested again."""
    rng = random.Random(seed)
    base = weigh(n_dags, rng)
    version = [0] * n_dags
    weight = list(base)
    cum = _zipf_cum(n_dags, alpha)
    trace = []
    for d in rng.choices(range(n_dags), cum_weights=cum, k=n_requests):
        if rng.random() < p_new_version:
            version[d] += 1
            weight[d] = int(base[d] * rng.uniform(0.9, 1.1))
        trace.append(((d, version[d]), weight[d]))
    return trace


def scheduler_sweep(
    n_dags: int, sweeps: int, *, p_redeploy: float = 0.02, seed: int = 4
) -> list[tuple[tuple[int, int], int]]:
    """The Airflow scheduler's pattern: every sweep visits every DAG's running version once, in the
    same order; before each visit, with probability ``p_redeploy``, the DAG gets a new version (a new
    key) and the old one is never visited again."""
    rng = random.Random(seed)
    weights = dag_weights(n_dags, rng)
    version = [0] * n_dags
    trace = []
    for _ in range(sweeps):
        for d in range(n_dags):
            if rng.random() < p_redeploy:
                version[d] += 1
            trace.append(((d, version[d]), weights[d]))
    return trace


def scheduler_loops(
    n_keys: int, sweeps: int, *, per_loop: int = 20, seed: int = 5, weigh: Weigh = uniform_weights(30 * KB, 60 * KB)
) -> list[tuple[int, int]]:
    """The scheduler's loop as the real one reads its DAG cache: each loop takes the next
    ``per_loop`` of ``n_keys`` keys round-robin and reads them once, then again in the same order
    (the scheduler looks each examined DAG run's DAG up twice per loop). ``sweeps`` passes over the
    keys, so ``sweeps * n_keys / per_loop`` loops of ``2 * per_loop`` requests each."""
    if n_keys % per_loop:
        raise ValueError(f"n_keys must be a multiple of per_loop={per_loop}, got n_keys={n_keys}")
    weights = weigh(n_keys, random.Random(seed))
    trace = []
    for start in range(0, sweeps * n_keys, per_loop):
        batch = [(k % n_keys, weights[k % n_keys]) for k in range(start, start + per_loop)]
        trace += batch + batch
    return trace


def synthetic_workloads(quick: bool = False) -> list[Workload]:
    """The weighted workloads of the benchmark table, with their byte budgets."""
    out = []
    n_sweep, passes = (200, 6) if quick else (400, 20)
    sweep = cyclic_sweep(n_sweep, passes)
    ws = total_weight(sweep)
    for factor in (1.5, 2, 4):
        out.append(Workload(f"cyclic sweep, working set {factor:g}x budget", sweep, int(ws / factor),
                            f"{n_sweep} keys x {passes} passes"))
    n_keys, n_req = (1000, 10_000) if quick else (2000, 50_000)
    for alpha in (0.8, 1.0):
        tr = zipf(n_keys, n_req, alpha)
        out.append(Workload(f"Zipf {alpha:g}", tr, int(0.10 * total_weight(tr)),
                            f"{n_keys} keys, {n_req} requests, budget 10% of bytes"))
    n_dags, n_req = (300, 10_000) if quick else (500, 50_000)
    tr = version_churn(n_dags, n_req)
    live = total_weight([((k[0]), w) for k, w in tr])  # bytes of the latest version of every DAG
    out.append(Workload("version churn", tr, int(0.25 * live),
                        f"{n_dags} DAGs Zipf 0.9, 1% new version/request, budget 25% of live bytes"))
    n_dags, sweeps = (150, 40) if quick else (300, 120)
    tr = scheduler_sweep(n_dags, sweeps)
    live = total_weight(tr[-n_dags:])  # the versions the last sweep visited
    for fraction in (0.5, 1.2):
        out.append(Workload(
            f"scheduler sweep + redeploys, budget {fraction:g}x live, ours with idle TTL", tr,
            int(fraction * live),
            f"{n_dags} DAGs x {sweeps} sweeps, 2% redeployed per sweep; TTL 3 sweeps", ttl=3 * n_dags))
    return out
