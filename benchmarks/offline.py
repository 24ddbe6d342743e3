"""Offline (clairvoyant) references for a trace of ``(key, weight)`` requests and a byte budget.

All three functions return ``(object_hit_ratio, byte_hit_ratio)``; ``belady_hits`` and
``belady_size_hits`` give the two schedules' outcome per request (byte ``i`` is 1 if request ``i``
hits), for per-loop miss counts.

``belady``        Belady's MIN with bypass: on a miss, if room is needed, evict the residents whose next
                  use is farthest in the future, unless the incoming object's own next use is farther
                  (then it is not cached). With unit weights this is the exact offline optimum.
``belady_size``   A size-aware variant ("Belady-Size"): the eviction victim is the resident with the
                  largest ``weight x distance to its next use`` (the space-time it would hold until it
                  could next hit), the incoming object being a candidate too (bypass). Exact argmax
                  over all residents, no sampling.
``upper_bound``   A provable upper bound on what any policy can reach, including the offline optimum:
                  the fractional-knapsack relaxation of Berger, Beckmann and Harchol-Balter,
                  "Practical Bounds on Optimal Caching with Variable Object Sizes" (SIGMETRICS 2018,
                  "PFOO-U"). Every hit needs its object resident for the whole interval since its
                  previous request, costing ``weight x interval length`` of space-time, and no schedule
                  has more than ``budget x trace length`` of it. Taking the cheapest intervals per unit
                  of value (per hit for the object ratio, per byte for the byte ratio) bounds both.

With variable weights the offline optimum is NP-hard (it contains knapsack), so for weighted traces
the benchmark reports ``max(belady, belady_size)`` -- both are schedules a cache could follow, so
the true optimum is at least that -- next to ``upper_bound``, which the optimum cannot exceed.
"""

from __future__ import annotations

import heapq
from typing import Hashable, Sequence

from .replay import hit_ratios

__all__ = ["next_uses", "belady", "belady_hits", "belady_size", "belady_size_hits", "upper_bound",
           "offline_reference"]

Trace = Sequence[tuple[Hashable, int]]


def next_uses(trace: Trace) -> list[int]:
    """For request i, the index of the next request for the same key, or ``len(trace)`` if none."""
    n = len(trace)
    nxt = [n] * n
    last: dict = {}
    for i in range(n - 1, -1, -1):
        k = trace[i][0]
        nxt[i] = last.get(k, n)
        last[k] = i
    return nxt


def belady(trace: Trace, budget: int) -> tuple[float, float]:
    return hit_ratios(trace, belady_hits(trace, budget))


def belady_hits(trace: Trace, budget: int) -> bytearray:
    n = len(trace)
    nxt = next_uses(trace)
    resident: dict = {}  # key -> (next use, weight)
    heap: list = []  # (-next use, tiebreak, key); stale items skipped lazily
    used = 0
    hits = bytearray(n)
    for i, (k, w) in enumerate(trace):
        r = resident.get(k)
        if r is not None:
            hits[i] = 1
            if r[1] != w:  # re-weighed in place
                used += w - r[1]
            resident[k] = (nxt[i], w)
            heapq.heappush(heap, (-nxt[i], i, k))
            while used > budget:  # only if the weight grew: drop the farthest-needed residents
                negnext, _tb, v = heapq.heappop(heap)
                rv = resident.get(v)
                if rv is None or rv[0] != -negnext:
                    continue  # stale
                used -= rv[1]
                del resident[v]
            continue
        if nxt[i] >= n or w > budget:
            continue  # never needed again, or cannot fit: bypass
        popped = []
        freed = 0
        while used - freed + w > budget:
            negnext, tb, v = heapq.heappop(heap)
            rv = resident.get(v)
            if rv is None or rv[0] != -negnext or v in (p[2] for p in popped):
                continue  # stale
            if -negnext <= nxt[i]:  # every remaining resident is needed sooner than k: bypass k
                heapq.heappush(heap, (negnext, tb, v))
                break
            popped.append((negnext, tb, v))
            freed += rv[1]
        if used - freed + w > budget:
            for item in popped:
                heapq.heappush(heap, item)
            continue
        for _, _, v in popped:
            used -= resident.pop(v)[1]
        resident[k] = (nxt[i], w)
        used += w
        heapq.heappush(heap, (-nxt[i], i, k))
    return hits


def belady_size(trace: Trace, budget: int) -> tuple[float, float]:
    return hit_ratios(trace, belady_size_hits(trace, budget))


def belady_size_hits(trace: Trace, budget: int) -> bytearray:
    import numpy as np

    n = len(trace)
    nxt = next_uses(trace)
    cap = 1024
    nx = np.zeros(cap, dtype=np.float64)  # next use of the resident in each slot
    wt = np.zeros(cap, dtype=np.float64)
    keys: list = [None] * cap
    slot_of: dict = {}
    count = 0
    used = 0
    hits = bytearray(n)
    for i, (k, w) in enumerate(trace):
        s = slot_of.get(k)
        if s is not None:
            hits[i] = 1
            used += w - int(wt[s])
            wt[s] = w
            nx[s] = nxt[i] if nxt[i] < n else np.inf
            # (a weight that grows in place is not re-checked here; synthetic traces never do that)
            continue
        if nxt[i] >= n or w > budget:
            continue
        mine = w * (nxt[i] - i)
        ok = True
        while used + w > budget:
            scores = wt[:count] * (nx[:count] - i)
            j = int(np.argmax(scores))
            if scores[j] <= mine:
                ok = False  # the incoming object is the worst use of space: bypass it
                break
            used -= int(wt[j])
            del slot_of[keys[j]]
            count -= 1
            if j != count:  # move the last slot into the hole
                nx[j], wt[j], keys[j] = nx[count], wt[count], keys[count]
                slot_of[keys[j]] = j
        if not ok:
            continue
        if count == cap:
            cap *= 2
            nx = np.resize(nx, cap)
            wt = np.resize(wt, cap)
            keys.extend([None] * (cap - len(keys)))
        nx[count], wt[count], keys[count] = nxt[i], w, k
        slot_of[k] = count
        count += 1
        used += w
    return hits


def upper_bound(trace: Trace, budget: int) -> tuple[float, float]:
    n = len(trace)
    nxt = next_uses(trace)
    # interval i -> next request j: space-time cost w_i * (j - i); yields 1 hit and w_j bytes
    intervals = [(trace[i][1] * (j - i), j - i, trace[j][1]) for i, j in enumerate(nxt)
                 if j < n and trace[i][1] <= budget]
    space_time = budget * n

    def fill(key, value) -> float:
        left, got = float(space_time), 0.0
        for iv in sorted(intervals, key=key):
            cost = iv[0]
            if cost <= left:
                left -= cost
                got += value(iv)
            else:
                got += value(iv) * left / cost
                break
        return got

    hits = fill(lambda iv: iv[0], lambda iv: 1)  # cheapest space-time per hit first
    hit_bytes = fill(lambda iv: iv[0] / max(iv[2], 1), lambda iv: iv[2])  # cheapest per byte first
    total = sum(w for _, w in trace)
    return (min(hits / n, 1.0) if n else 0.0, min(hit_bytes / total, 1.0) if total else 0.0)


def offline_reference(trace: Trace, budget: int) -> tuple[float, float]:
    """The better of ``belady`` and ``belady_size`` on each ratio: achievable, so <= the optimum."""
    a, b = belady(trace, budget), belady_size(trace, budget)
    return max(a[0], b[0]), max(a[1], b[1])
