"""How long an ``os.fork()`` waits for the DAG bag's maintenance thread to stop.

A fork stops the thread first and the parent starts it again after (``_Maintainer`` in
``bytecache_airflow/dagbag.py``); this prints what that costs a caller of ``fork`` (LocalExecutor
spawning a worker), side by side with forks in a process that has no bag:

    .venv/bin/python -m profiling.fork_wait [--forks 100 --blocks 4]

``plain``: Airflow and bytecache imported, no bag, one thread. ``bag``: one real
``ByteBoundedDagBag`` (empty: no DB is needed) whose maintenance thread runs -- idle between
its once-a-second steps, as it is nearly all the time. Blocks of each case alternate, each in a
fresh process; the child exits at once, the parent times ``os.fork()`` itself (its hooks
included). A fork that lands in a maintenance step also waits for that step (a collection holds
the GIL, so it would wait anyway), at most ``_Maintainer.fork_wait_limit`` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time


def _time_forks(case: str, forks: int) -> dict:
    from bytecache_airflow.dagbag import ByteBoundedDagBag, _Maintainer

    bag = None
    if case == "bag":
        bag = ByteBoundedDagBag(False, max_bytes="64MiB", stats_prefix="fork_wait.dag_bag")
        bag.maintain(force=True)  # starts the maintenance thread, as a scheduler's first lookup does
    seconds = []
    for _ in range(forks):
        started = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        seconds.append(time.perf_counter() - started)
        os.waitpid(pid, 0)
    return {"case": case, "seconds": seconds, "thread_stops": _Maintainer.fork_waits,
            "stop_waits": _Maintainer.max_fork_wait, "forks_with_thread": _Maintainer.forks_with_thread,
            "alive_after": bag is None or any(t.name == "bytecache-dagbag-maintenance" for t in threading.enumerate())}


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m profiling.fork_wait", description=__doc__.split("\n\n")[0])
    ap.add_argument("--forks", type=int, default=100, help="forks per block")
    ap.add_argument("--blocks", type=int, default=4, help="blocks per case, alternating")
    ap.add_argument("--case", choices=("plain", "bag"), help=argparse.SUPPRESS)  # one block, in a child process
    args = ap.parse_args(argv)
    if args.case:
        print(json.dumps(_time_forks(args.case, args.forks)))
        return 0
    home = tempfile.mkdtemp(prefix="bytecache-fork-wait-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    env.update(AIRFLOW_HOME=home, AIRFLOW__CORE__LOAD_EXAMPLES="False")
    results: dict[str, list[dict]] = {"plain": [], "bag": []}
    for _ in range(args.blocks):
        for case in results:
            proc = subprocess.run([sys.executable, "-m", "profiling.fork_wait", "--case", case, "--forks", str(args.forks)],
                                  env=env, capture_output=True, text=True, check=True)
            results[case].append(json.loads(proc.stdout.splitlines()[-1]))
    print(f"Python {sys.version.split()[0]}, {args.blocks} blocks x {args.forks} forks per case, os.fork() in the parent (ms)\n")
    print("| case | p50 | p99 | max | p50 / plain p50 | thread stops | longest stop (ms) | forks the thread outlived | thread running after |")
    print("|---|---|---|---|---|---|---|---|---|")
    plain_p50 = statistics.median(s for block in results["plain"] for s in block["seconds"])
    for case, blocks in results.items():
        seconds = [s for block in blocks for s in block["seconds"]]
        print(f"| {case} | {statistics.median(seconds) * 1e3:.3f} | {_quantile(seconds, 0.99) * 1e3:.3f} | "
              f"{max(seconds) * 1e3:.3f} | {statistics.median(seconds) / plain_p50:.2f} | "
              f"{sum(b['thread_stops'] for b in blocks)} | {max(b['stop_waits'] for b in blocks) * 1e3:.3f} | "
              f"{sum(b['forks_with_thread'] for b in blocks)} | {all(b['alive_after'] for b in blocks)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
