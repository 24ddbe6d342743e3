#!/usr/bin/env python
"""Print the bytecache benchmark table (markdown): hit-path cost, hit ratios on weighted synthetic
traces against offline references, and the public LIRS traces against libCacheSim.

    python -m benchmarks.run            # full run, a few minutes
    python -m benchmarks.run --quick    # smaller traces and fewer timing rounds, under a minute

Needs ``cachetools``, ``libcachesim`` and ``numpy`` (the ``bench`` extra) besides bytecache itself.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time

import cachetools

import bytecache
from bytecache import ByteCache

from . import hitpath, libcachesim_ref, offline, workloads
from .replay import Ticks, Weighted, replay, weight_of

COLUMNS = ["case", "ours: default", "ours: lru", "cachetools LRU", "libCacheSim LRU",
           "libCacheSim W-TinyLFU", "libCacheSim LIRS", "offline", "default % of offline", "target"]
OK, MISS = "met", "**MISSED**"


def row(*cells) -> str:
    cells = list(cells) + [""] * (len(COLUMNS) - len(cells))
    return "| " + " | ".join(str(c) for c in cells) + " |"


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def of(a: float, b: float) -> str:
    return f"{100 * a / b:.0f}%" if b else "n/a"


# -- a. hit path -------------------------------------------------------------------------------
def section_hitpath(quick: bool) -> list[str]:
    n_keys = 1000
    keys = [f"dag-version-{i:06d}" for i in range(n_keys)]
    big = 1 << 62
    ttl = 3600.0
    impls: dict = {}
    d = {k: Weighted(100) for k in keys}
    impls["dict"] = (d.get, False)
    lru = cachetools.LRUCache(big, getsizeof=weight_of)
    ttlc = cachetools.TTLCache(big, ttl, getsizeof=weight_of)
    caches = {
        "cachetools.LRUCache(getsizeof)": lru,
        "cachetools.TTLCache(getsizeof)": ttlc,
        "ByteCache lru": ByteCache(big, policy="lru"),
        "ByteCache lru, ttl": ByteCache(big, policy="lru", ttl=ttl),
        "ByteCache default": ByteCache(big),
        "ByteCache default, ttl": ByteCache(big, ttl=ttl),
    }
    for c in caches.values():
        for k in keys:
            c[k] = Weighted(100)
    loops = {"dict": hitpath.make_loop(d.get, keys),
             "dict + RLock": hitpath.make_loop(d.get, keys, threading.RLock())}
    for name in ("cachetools.LRUCache(getsizeof)", "cachetools.TTLCache(getsizeof)"):
        loops[name] = hitpath.make_loop(caches[name].get, keys)
        loops[name + " + RLock"] = hitpath.make_loop(caches[name].get, keys, threading.RLock())
    for name in ("ByteCache lru", "ByteCache lru, ttl", "ByteCache default", "ByteCache default, ttl"):
        loops[name + " (own lock)"] = hitpath.make_loop(caches[name].get, keys)
    rounds = 7 if quick else 25
    res = hitpath.measure(loops, n_keys, rounds=rounds, loops_per_round=10 if quick else 20)
    ref_name = "cachetools.TTLCache(getsizeof) + RLock"
    ref_min, ref_med = res[ref_name]
    out = [row(f"**a. hit path: `get` on {n_keys} warm keys, ns/op over {rounds} interleaved rounds**",
               "**ns/op (min)**", "**ns/op (median)**", "**x TTLCache+RLock (min)**",
               "**x TTLCache+RLock (median)**", "", "", "", "", "**target: ByteCache <= 1.5x**")]
    for name, (mn, md) in res.items():
        target = ""
        if name.startswith("ByteCache"):
            target = OK if mn / ref_min <= 1.5 and md / ref_med <= 1.5 else MISS
        out.append(row(name, f"{mn:.0f}", f"{md:.0f}", f"{mn / ref_min:.2f}", f"{md / ref_med:.2f}",
                       "", "", "", "", target))
    return out


# -- b. weighted synthetic traces -------------------------------------------------------------
def replay_ours(wl, policy: str) -> tuple[float, float]:
    if wl.ttl is None:
        return replay(wl.trace, lambda: ByteCache(wl.budget, policy=policy))
    clock = Ticks()
    return replay(wl.trace, lambda: ByteCache(wl.budget, policy=policy, ttl=wl.ttl, timer=clock), ticks=clock)


def section_synthetic(quick: bool) -> list[str]:
    out = [row("**b. weighted synthetic traces: object hit % / byte hit %**", "", "", "", "", "", "",
               "**reference (bound)**", "**of reference (of bound)**",
               "**target: sweeps >= 90% of offline; Zipf >= LRU - 2 pts**")]
    for wl in workloads.synthetic_workloads(quick):
        tr, budget = wl.trace, wl.budget
        r = {
            "default": replay_ours(wl, "tinylfu"),
            "lru": replay_ours(wl, "lru"),
            "ct": replay(tr, lambda: cachetools.LRUCache(budget, getsizeof=weight_of)),
        }
        with libcachesim_ref.OracleTrace(tr) as ot:
            for p in ("LRU", "W-TinyLFU", "LIRS"):
                r[p] = ot.run(p, budget)
        ref = offline.offline_reference(tr, budget)
        ub = offline.upper_bound(tr, budget)
        d = r["default"]
        two = lambda x: f"{pct(x[0])} / {pct(x[1])}"  # noqa: E731
        target = ""
        if wl.name.startswith("cyclic"):
            target = (f"obj {OK if d[0] >= 0.9 * ref[0] else MISS}, "
                      f"byte {OK if d[1] >= 0.9 * ref[1] else MISS}")
        elif wl.name.startswith("Zipf"):
            best = (max(r["lru"][0], r["ct"][0]), max(r["lru"][1], r["ct"][1]))
            target = (f"obj {OK if d[0] >= best[0] - 0.02 else MISS}, "
                      f"byte {OK if d[1] >= best[1] - 0.02 else MISS}")
        label = (f"{wl.name} ({wl.note}; budget {budget / 1e6:.0f} MB, working set "
                 f"{workloads.total_weight(tr) / 1e6:.0f} MB)")
        out.append(row(label, two(d), two(r["lru"]), two(r["ct"]), two(r["LRU"]), two(r["W-TinyLFU"]),
                       two(r["LIRS"]), f"{two(ref)} ({two(ub)})",
                       f"{of(d[0], ref[0])} / {of(d[1], ref[1])} ({of(d[0], ub[0])} / {of(d[1], ub[1])})",
                       target))
    return out


# -- c. LIRS traces -------------------------------------------------------------------------------
def section_lirs(quick: bool) -> list[str]:
    out = [row("**c. LIRS traces, weight 1, object hit % (libCacheSim W-TinyLFU/LIRS: % of offline)**",
               "", "", "", "", "", "", "**Belady (ours w/ bypass; libCacheSim)**", "",
               "**target: >= 90% of Belady**")]
    for name, caps in workloads.LIRS_CAPACITIES.items():
        tr = workloads.load_lirs(name)
        note = f"{len(tr):,} refs"
        if quick and len(tr) > 60_000:
            tr = tr[:50_550]
            note = f"first {len(tr):,} refs (--quick)"
        with libcachesim_ref.OracleTrace(tr) as ot:
            for cap in caps:
                lcs = {p: ot.run(p, cap)[0] for p in ("LRU", "W-TinyLFU", "LIRS", "Belady")}
                default = replay(tr, lambda: ByteCache(cap))[0]
                lru = replay(tr, lambda: ByteCache(cap, policy="lru"))[0]
                ct = replay(tr, lambda: cachetools.LRUCache(cap))[0]
                ours_opt = offline.belady(tr, cap)[0]
                best = max(ours_opt, lcs["Belady"])
                out.append(row(
                    f"{name} ({note}), capacity {cap}", pct(default), pct(lru), pct(ct), pct(lcs["LRU"]),
                    f"{pct(lcs['W-TinyLFU'])} ({of(lcs['W-TinyLFU'], best)})",
                    f"{pct(lcs['LIRS'])} ({of(lcs['LIRS'], best)})",
                    f"{pct(ours_opt)}; {pct(lcs['Belady'])}", of(default, best),
                    OK if default >= 0.9 * best else MISS))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller traces, fewer rounds (< 1 minute)")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += section_hitpath(args.quick)
    lines += section_synthetic(args.quick)
    lines += section_lirs(args.quick)
    print("\n".join(lines))
    import libcachesim
    print(f"\n`python -m benchmarks.run{' --quick' if args.quick else ''}`: bytecache "
          f"{getattr(bytecache, '__version__', '?')}, cachetools {cachetools.__version__}, libcachesim "
          f"{libcachesim.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"{time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
