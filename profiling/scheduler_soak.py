#!/usr/bin/env python
"""The scheduler soak: does the real ``airflow scheduler``'s RSS stay flat under DAG-version churn?

    python profiling/scheduler_soak.py --quick            # CI-sized: ~10 minutes, runs (a), (r), (c)
    python profiling/scheduler_soak.py --minutes 30       # a soak: every configuration 30 minutes

For each configuration, one after the other, on the same seeded workload (``profiling.workload``):

(a) ``unbounded``: Airflow's cache as before 3.3 -- ``CachedDBDagBag`` with size 0 and TTL 0 (a
    plain dict), started through ``profiling.bootstrap`` which sets Airflow's module constant
    ``SCHEDULER_DAG_CACHE_SIZE = 0`` before running Airflow's own CLI;
(b) ``stock``: Airflow 3.3 as shipped, its 512-entry LRU (skipped by ``--quick``);
(r) ``reference``: Airflow's LRU with one entry -- the scheduler's own memory on this workload
    with (almost) no DAG cache; its peak RSS is the baseline the bytecache run is judged against;
(c) ``bytecache``: our plugin's byte-bounded bag, budget ``[scheduler] dag_cache_max_bytes``.

For (a), (b), (r) ``[scheduler] dag_cache_policy = airflow`` keeps our plugin out of the way.
Each run gets a fresh Airflow home (a copy of one migrated + prepared SQLite DB, the DAG files at
version 1), a real ``airflow dag-processor`` and a real scheduler (LocalExecutor,
``[core] parallelism = 1``, ``default_pool`` at 0 slots so nothing executes and every run stays
running). The redeployer rewrites a fraction of the DAG files every few seconds; the
dag-processor writes new ``dag_version``s; the scheduler resolves each run to the latest one.

memray traces the scheduler through Airflow's ``[profiling] memray_trace_components =
scheduler``. RSS/PSS of the scheduler process are sampled every second; Airflow's statsd
metrics arrive at a UDP listener inside this process. The report folder (``--out``, default
``reports/soak-<timestamp>``) gets ``rss.csv``, ``rss.png``, per-run memray flamegraphs,
``memray stats``/``summary`` text, scheduler logs and ``summary.md`` whose last line is the
verdict; the exit status says the same (0 flat, 1 not flat, 2 error).
"""

from __future__ import annotations

import argparse
import atexit
import csv
import json
import math
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean, median

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from profiling.workload import (  # noqa: E402
    DEEP_PER_JSON,
    DEFAULT_SIZE_MIX,
    QUICK_SIZE_MIX,
    Redeployer,
    WorkloadSpec,
    airflow_env,
    parse_size_mix,
    plan_dags,
    write_dags,
)

MB = 1024 * 1024
CONFIGS = ("unbounded", "stock", "reference", "bytecache")
LABELS = {
    "unbounded": "(a) pre-3.3 unbounded (CachedDBDagBag size 0, TTL 0)",
    "stock": "(b) stock Airflow 3.3 (512-entry LRU)",
    "reference": "(r) reference: 1-entry cache",
    "bytecache": "(c) bytecache",
}
BIN = Path(sys.executable).parent


# -- pure helpers (tested) --------------------------------------------------------------------
def fit_slope(ts: list[float], ys: list[float]) -> float:
    """Least-squares slope of ``ys`` against ``ts`` (units of y per unit of t); 0 for < 2 points."""
    n = len(ts)
    if n < 2:
        return 0.0
    mt, my = sum(ts) / n, sum(ys) / n
    sxx = sum((t - mt) ** 2 for t in ts)
    if sxx == 0:
        return 0.0
    return sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / sxx


def slope_mb_per_hour(samples: list[tuple[float, int]], start: float) -> float:
    """Slope of RSS (bytes) over time (s) after ``start``, in MB per hour."""
    pts = [(t, r) for t, r in samples if t >= start]
    return fit_slope([t / 3600.0 for t, _ in pts], [r / MB for _, r in pts])


def slope_stderr_mb_per_hour(samples: list[tuple[float, int]], start: float, block_s: float = 60.0) -> float | None:
    """Standard error of the post-warm-up slope (MB/h): an ordinary least-squares fit over the
    means of ``block_s`` blocks, since per-second RSS samples are far from independent (one
    collection cycle spans many of them). None for fewer than three blocks."""
    blocks: dict[int, list[float]] = {}
    for t, r in samples:
        if t >= start:
            blocks.setdefault(int((t - start) // block_s), []).append(r / MB)
    if len(blocks) < 3:
        return None
    ts = [(k + 0.5) * block_s / 3600.0 for k in sorted(blocks)]
    ys = [mean(blocks[k]) for k in sorted(blocks)]
    b = fit_slope(ts, ys)
    mt, my = mean(ts), mean(ys)
    resid = sum((y - (my + b * (t - mt))) ** 2 for t, y in zip(ts, ys))
    sxx = sum((t - mt) ** 2 for t in ts)
    return math.sqrt(resid / (len(ts) - 2) / sxx)


def slope_limit_mb_h(budget: int, fit_window_s: float) -> float:
    """The flatness limit on the post-warm-up slope.

    1% of the budget per hour -- the soak acceptance. A short run (a fit window under 15
    minutes) cannot resolve that from RSS noise (one 4 MiB arena step in a 2-minute window is
    120 MB/h), so there the limit is also at least 8 MB of drift over the window."""
    limit = 0.01 * budget / MB
    if fit_window_s <= 0:
        return math.inf  # no samples after the warm-up: nothing to judge the slope by
    if fit_window_s < 15 * 60:
        limit = max(limit, 8.0 / (fit_window_s / 3600.0))
    return limit


@dataclass
class Verdict:
    flat: bool
    slope: float
    slope_limit: float
    growth: float  # peak - baseline, MB
    budget: float  # MB
    margin: float  # MB
    reference_slope: float | None = None

    @property
    def excess_slope(self) -> float:
        """The slope beyond the reference run's own (scheduler growth without a DAG cache)."""
        return self.slope - max(self.reference_slope or 0.0, 0.0)

    def line(self) -> str:
        rel = "≤" if self.growth <= self.budget + self.margin else ">"
        srel = "≤" if self.excess_slope <= self.slope_limit else ">"
        if self.reference_slope is None:
            slope = f"slope {self.slope:.1f} MB/h {srel} {self.slope_limit:.1f} MB/h"
        else:
            slope = (f"slope {self.slope:.1f} MB/h, {self.excess_slope:.1f} MB/h above the reference run's "
                     f"{self.reference_slope:.1f} MB/h {srel} {self.slope_limit:.1f} MB/h")
        return (
            f"RSS flat: {'yes' if self.flat else 'no'} ({slope}, "
            f"peak − baseline {self.growth:.1f} MB {rel} budget {self.budget:.1f} MB + margin {self.margin:.1f} MB)"
        )


def margin_mb(budget: int, fraction: float = 0.25, floor_mb: float = 16.0) -> float:
    """Allowed RSS above baseline + budget: 25% of the budget, at least 16 MB (RSS moves in
    pymalloc/glibc arena steps and memray keeps buffers; a few-MB budget cannot be resolved)."""
    return max(fraction * budget / MB, floor_mb)


def verdict(slope: float, peak: int, baseline: int, budget: int, fit_window_s: float, margin_fraction: float = 0.25,
            reference_slope: float | None = None) -> Verdict:
    """Flat if the slope after warm-up (less the reference run's, when there is one: growth the
    scheduler shows with no DAG cache is not the cache's) is within :func:`slope_limit_mb_h`, and
    the peak is within budget + margin of the baseline."""
    limit = slope_limit_mb_h(budget, fit_window_s)
    growth = (peak - baseline) / MB
    margin = margin_mb(budget, margin_fraction)
    v = Verdict(False, slope, limit, growth, budget / MB, margin, reference_slope)
    v.flat = v.excess_slope <= limit and growth <= budget / MB + margin
    return v


def parse_statsd(packet: str) -> list[tuple[str, float, str]]:
    """``name:value|type[|@rate]`` lines -> (name, value, type); malformed lines are skipped."""
    out = []
    for line in packet.splitlines():
        name, _, rest = line.partition(":")
        if not rest:
            continue
        parts = rest.split("|")
        if len(parts) < 2:
            continue
        try:
            value = float(parts[0])
        except ValueError:
            continue
        rate = 1.0
        for p in parts[2:]:
            if p.startswith("@"):
                try:
                    rate = float(p[1:]) or 1.0
                except ValueError:
                    pass
        if parts[1] == "c" and rate != 1.0:
            value /= rate
        out.append((name, value, parts[1]))
    return out


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(math.ceil(q * len(s))) - 1))]


# -- processes --------------------------------------------------------------------------------
_PROCS: list[subprocess.Popen] = []


def _kill_group(p: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def cleanup_processes() -> None:
    """Stop every process group this soak started (SIGTERM, then SIGKILL after 15 s)."""
    live = [p for p in _PROCS if p.poll() is None]
    for p in live:
        _kill_group(p, signal.SIGTERM)
    deadline = time.time() + 15
    for p in live:
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            pass
    for p in _PROCS:
        _kill_group(p, signal.SIGKILL)  # workers left in the group, if any
        if p.poll() is None:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
    _PROCS.clear()


def start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    f = open(log, "ab")
    p = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True, cwd=str(ROOT))
    f.close()
    _PROCS.append(p)
    return p


def stop(p: subprocess.Popen, timeout: float) -> int | None:
    """SIGTERM the process (graceful: the scheduler writes its report, memray closes its file),
    then its whole group."""
    deadline = time.time() + timeout
    while p.poll() is None and time.time() < deadline:
        try:
            p.send_signal(signal.SIGTERM)  # again every 20 s: a signal can be lost in a gc callback
            p.wait(timeout=min(20.0, max(0.1, deadline - time.time())))
        except subprocess.TimeoutExpired:
            pass
    if p.poll() is None:
        print(f"  pid {p.pid} did not exit in {timeout:.0f}s; killing its group", flush=True)
    _kill_group(p, signal.SIGTERM)
    time.sleep(0.5)
    _kill_group(p, signal.SIGKILL)
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    if p in _PROCS:
        _PROCS.remove(p)
    return p.returncode


class _Interrupted(Exception):
    pass


def _on_signal(signum, frame):
    raise _Interrupted(f"signal {signum}")


# -- statsd -------------------------------------------------------------------------------------
class StatsdListener:
    """Receives Airflow's statsd packets on 127.0.0.1 (an ephemeral port) in a thread."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * MB)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.reset()
        self.thread = threading.Thread(target=self._run, name="statsd", daemon=True)
        self.thread.start()

    def reset(self) -> None:
        with getattr(self, "lock", threading.Lock()):
            self.counters: dict[str, float] = {}
            self.gauges: dict[str, float] = {}
            self.timers: dict[str, list[tuple[float, float]]] = {}
            self.packets = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            now = time.time()
            with self.lock:
                self.packets += 1
                for name, value, kind in parse_statsd(data.decode("utf-8", "replace")):
                    if kind == "c":
                        self.counters[name] = self.counters.get(name, 0.0) + value
                    elif kind == "g":
                        self.gauges[name] = value
                    elif kind in ("ms", "h", "d"):
                        self.timers.setdefault(name, []).append((now, value))

    def counter(self, suffix: str) -> float:
        with self.lock:
            return sum(v for k, v in self.counters.items() if k.endswith(suffix))

    def gauge(self, suffix: str) -> float | None:
        with self.lock:
            for k, v in self.gauges.items():
                if k.endswith(suffix):
                    return v
        return None

    def timer(self, suffix: str) -> list[tuple[float, float]]:
        with self.lock:
            return [x for k, v in self.timers.items() if k.endswith(suffix) for x in v]

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


# -- memray -------------------------------------------------------------------------------------
LOAD_PATH_FUNCS = ("_get_dag", "_read_dag", "get_latest_version_of_dag")


def memray_cache_bytes(bin_path: Path) -> dict:
    """Bytes memray saw still allocated when the tracker closed, in total and under the DAG
    bag's load path (a frame ``_get_dag``/``_read_dag`` in a ``dagbag.py``: Airflow's bag or ours).

    The scheduler's bootstrap runs ``gc.collect()`` right before the tracker closes, so evicted
    DAGs are gone and what is left under the load path is the cache's content."""
    import memray

    total = under = 0
    with memray.FileReader(str(bin_path), report_progress=False) as reader:
        peak = reader.metadata.peak_memory
        for rec in reader.get_leaked_allocation_records(merge_threads=True):
            total += rec.size
            try:
                frames = rec.stack_trace()
            except Exception:
                frames = []
            if any(fn in LOAD_PATH_FUNCS and str(path).endswith("dagbag.py") for fn, path, _ in frames):
                under += rec.size
    return {"leaked_total": total, "leaked_under_load_path": under, "peak_memory": peak}


def memray_outputs(bin_path: Path, outdir: Path, timeout: float = 600) -> dict:
    mem = [str(BIN / "python"), "-m", "memray"]
    outputs = {}
    jobs = {
        "memray-flamegraph.html": mem + ["flamegraph", "-f", "-o", str(outdir / "memray-flamegraph.html"), str(bin_path)],
        "memray-flamegraph-leaks.html": mem + ["flamegraph", "--leaks", "-f", "-o", str(outdir / "memray-flamegraph-leaks.html"), str(bin_path)],
    }
    for name, cmd in jobs.items():
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        outputs[name] = r.returncode == 0
        if r.returncode:
            (outdir / f"{name}.err").write_text(r.stdout + r.stderr)
    for name, args in {"memray-stats.txt": ["stats"], "memray-summary.txt": ["summary"]}.items():
        r = subprocess.run(mem + args + [str(bin_path)], capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, "COLUMNS": "200", "TERM": "dumb"})
        (outdir / name).write_text(r.stdout + (r.stderr if r.returncode else ""))
        outputs[name] = r.returncode == 0
    return outputs


# -- one run ------------------------------------------------------------------------------------
@dataclass
class RunResult:
    name: str
    budget: int | None
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t since start, rss, pss)
    redeploys: list[float] = field(default_factory=list)
    versions_start: int = 0
    versions_end: int = 0
    report: dict = field(default_factory=dict)
    statsd: dict = field(default_factory=dict)
    memray: dict = field(default_factory=dict)
    loop_ms: list[float] = field(default_factory=list)
    duration: float = 0.0
    error: str | None = None
    metrics: dict | None = None  # set for a run taken from an earlier report
    source: Path | None = None


def describe_workload(spec: WorkloadSpec, setup: dict, active_bytes: int) -> str:
    return (
        f"Workload: {spec.n_dags} DAGs (seed {spec.seed}, size mix {', '.join(f'{k}:{v:g}' for k, v in spec.size_mix.items())} tasks:weight, "
        f"{setup.get('tasks', '?')} tasks, {_mb(setup.get('json_bytes'))} MB of serialized JSON), {spec.runs} running runs "
        f"(default_pool 0 slots), {spec.per_tick()} files rewritten every {spec.redeploy_interval:g} s; "
        f"active set ≈ {_mb(active_bytes)} MB deserialized (JSON × {DEEP_PER_JSON})"
    )


def workload_line(summary: str) -> str:
    """The workload description of a summary.md, up to the budget (what two reports must share)."""
    line = next((x for x in summary.splitlines() if x.startswith("Workload: ")), "")
    return line.split("; budget")[0]


def load_reference(report_dir: Path) -> RunResult:
    """The reference run (r) of an earlier soak report: its RSS samples and metrics.

    For re-running only the bytecache configuration against a reference already measured on
    the same seeded workload (same DAGs, size mix, redeploys): the reference does not depend on
    bytecache's code, and a 30-minute run of it is half an hour saved."""
    metrics = json.loads((report_dir / "metrics.json").read_text()).get("reference")
    if not metrics:
        raise ValueError(f"--reference-from {report_dir}: its metrics.json has no reference run")
    res = RunResult("reference", None, metrics=metrics, source=report_dir)
    with open(report_dir / "rss.csv", newline="") as f:
        res.samples = [(float(r["t_s"]), int(r["rss_bytes"]), int(r["pss_bytes"])) for r in csv.DictReader(f) if r["config"] == "reference"]
    with open(report_dir / "redeploys.csv", newline="") as f:
        res.redeploys = [float(r["t_s"]) for r in csv.DictReader(f) if r["config"] == "reference"]
    return res


def count_versions(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
            return int(c.execute("SELECT count(*) FROM dag_version").fetchone()[0])
    except sqlite3.Error:
        return -1


def proc_memory(pid: int) -> tuple[int, int]:
    import psutil

    try:
        m = psutil.Process(pid).memory_full_info()
        return m.rss, getattr(m, "pss", 0)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0, 0


def run_config(name: str, args, spec: WorkloadSpec, template_db: Path, work: Path, out: Path, statsd: StatsdListener, budget: int) -> RunResult:
    res = RunResult(name, budget if name == "bytecache" else None)
    home = work / name
    shutil.rmtree(home, ignore_errors=True)
    (home / "plugins").mkdir(parents=True)
    shutil.copy(template_db, home / "airflow.db")
    plans = write_dags(home / "dags", spec)
    rundir = out / name
    rundir.mkdir(parents=True, exist_ok=True)
    report_path = rundir / "scheduler-report.json"
    extra = {
        "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": str(args.min_update_interval),
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",  # changed files are re-parsed at once anyway
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__DAG_PROCESSOR__FILE_PARSING_SORT_MODE": "modified_time",
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(statsd.port),
        "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }
    sched_extra = {
        "AIRFLOW__PROFILING__MEMRAY_TRACE_COMPONENTS": "scheduler" if not args.no_memray else "",
        "AIRFLOW__PROFILING__MEMRAY_DETAILED_TRACING": "True" if args.memray_detailed else "False",
        "BYTECACHE_PROFILE_REPORT": str(report_path),
        # deep-measure the cached DAGs at exit (seconds per 100 MB): only where there is a gauge to check
        "BYTECACHE_PROFILE_DEEP": "1" if name == "bytecache" else "0",
    }
    if args.trace and name == "bytecache":
        sched_extra["BYTECACHE_PROFILE_TRACE"] = str(rundir / "scheduler-trace.txt.gz")
    if name == "unbounded":
        sched_extra.update({"BYTECACHE_PROFILE_DAG_CACHE_SIZE": "0", "AIRFLOW__SCHEDULER__DAG_CACHE_POLICY": "airflow"})
    elif name == "reference":
        # Airflow's LRU with one entry: the scheduler's own memory on this workload with (almost)
        # no DAG cache -- its RSS plateau is the baseline the bytecache run is judged against.
        sched_extra.update({"BYTECACHE_PROFILE_DAG_CACHE_SIZE": "1", "AIRFLOW__SCHEDULER__DAG_CACHE_POLICY": "airflow"})
    elif name == "stock":
        sched_extra.update({"AIRFLOW__SCHEDULER__DAG_CACHE_POLICY": "airflow"})
    else:
        sched_extra.update(
            {
                "AIRFLOW__SCHEDULER__DAG_CACHE_MAX_BYTES": f"{budget}B",
                "AIRFLOW__SCHEDULER__DAG_CACHE_TTL": str(args.ttl),
            }
        )
        if args.policy:
            sched_extra["AIRFLOW__SCHEDULER__DAG_CACHE_POLICY"] = args.policy
    env = airflow_env(home, **extra)
    senv = {**env, **sched_extra}
    statsd.reset()
    res.versions_start = count_versions(home / "airflow.db")
    t_start = time.time()
    dagp = start([str(BIN / "airflow"), "dag-processor"], env, rundir / "dag-processor.log")
    sched = start([str(BIN / "python"), "-m", "profiling.bootstrap", "scheduler", "--skip-serve-logs"], senv, rundir / "scheduler.log")
    duration = args.config_durations.get(name, args.duration)
    redeployer = Redeployer(home / "dags", spec, plans, on_event=lambda ev: res.redeploys.append(ev.t - t_start))
    redeployer.start(duration=duration)
    next_status = t_start + args.status_every
    next_sample = t_start
    try:
        while True:
            now = time.time()
            if now - t_start >= duration:
                break
            if sched.poll() is not None:
                raise RuntimeError(f"scheduler exited early with status {sched.returncode}; see {rundir / 'scheduler.log'}")
            if dagp.poll() is not None:
                raise RuntimeError(f"dag-processor exited early with status {dagp.returncode}; see {rundir / 'dag-processor.log'}")
            rss, pss = proc_memory(sched.pid)
            if rss:
                res.samples.append((now - t_start, rss, pss))
            if now >= next_status:
                next_status += args.status_every
                versions = count_versions(home / "airflow.db")
                cb = statsd.gauge("scheduler.dag_bag.cache_bytes")
                print(
                    f"  [{name}] {now - t_start:6.0f}s  RSS {rss / MB:7.1f} MB  PSS {pss / MB:7.1f} MB  "
                    f"versions +{versions - res.versions_start:<5d} rewrites {redeployer.rewrites:<5d} "
                    f"misses {statsd.counter('scheduler.dag_bag.cache_miss'):<6.0f} "
                    f"cache bytes {('%.1f MB' % (cb / MB)) if cb is not None else 'n/a'}",
                    flush=True,
                )
            next_sample += 1.0
            time.sleep(max(0.0, next_sample - time.time()))
    except Exception as exc:
        res.error = str(exc)
        raise
    finally:
        redeployer.stop()
        res.duration = time.time() - t_start
        res.versions_end = count_versions(home / "airflow.db")
        stop(sched, timeout=120)
        stop(dagp, timeout=20)
    time.sleep(1.0)  # last statsd packets
    if report_path.exists():
        res.report = json.loads(report_path.read_text())
    res.statsd = {
        "hits": statsd.counter("scheduler.dag_bag.cache_hit"),
        "misses": statsd.counter("scheduler.dag_bag.cache_miss"),
        "cache_bytes": statsd.gauge("scheduler.dag_bag.cache_bytes"),
        "cache_max_bytes": statsd.gauge("scheduler.dag_bag.cache_max_bytes"),
        "cache_uncollected_bytes": statsd.gauge("scheduler.dag_bag.cache_uncollected_bytes"),
        "cache_size": statsd.gauge("scheduler.dag_bag.cache_size"),
        "reclaims": statsd.counter("scheduler.dag_bag.cache_reclaims"),
        "reclaim_ms": [v for _, v in statsd.timer("scheduler.dag_bag.cache_reclaim_duration")],
        "packets": statsd.packets,
    }
    res.loop_ms = [v for _, v in statsd.timer("scheduler.scheduler_loop_duration")]
    bin_path = home / "scheduler_memory.bin"
    if bin_path.exists():
        dest = rundir / "scheduler_memory.bin"
        shutil.move(str(bin_path), dest)
        if name != "reference":
            print(f"  [{name}] memray: {dest.stat().st_size / MB:.1f} MB .bin; rendering flamegraphs, stats, summary", flush=True)
        try:
            if name != "reference":  # the reference only provides the baseline: no flamegraphs
                res.memray = memray_cache_bytes(dest)
                res.memray["outputs"] = memray_outputs(dest, rundir)
        except Exception as exc:  # a truncated file must not lose the rest of the report
            res.memray = {"error": repr(exc)}
        if not args.keep_bin:
            dest.unlink()
    return res


# -- report ---------------------------------------------------------------------------------------
def baseline_of(report: dict) -> int | None:
    """The scheduler's RSS once start-up is over: after its first scheduling loop."""
    return (report.get("first_loop") or {}).get("rss") or (report.get("loop_start") or {}).get("rss")


def run_metrics(res: RunResult, warmup: float) -> dict:
    if res.metrics is not None:  # a run taken from an earlier report (--reference-from)
        return res.metrics
    s = [(t, r) for t, r, _ in res.samples]
    if not s:
        return {}
    rep = res.report
    baseline = baseline_of(rep) or s[0][1]
    if res.duration:  # a run shorter than the others (--config-minutes) gets 45% of its own length
        warmup = min(warmup, 0.45 * res.duration)
    warm = min(s, key=lambda x: abs(x[0] - warmup))
    peak = max(r for _, r in s)
    slope = slope_mb_per_hour(s, warmup)
    minutes = res.duration / 60 if res.duration else float("nan")
    misses = rep.get("misses", res.statsd.get("misses", 0))
    hits = rep.get("hits", res.statsd.get("hits", 0))
    loops = rep.get("loops") or 0
    gauge = res.statsd.get("cache_bytes")
    if gauge is None:
        gauge = (rep.get("gauges") or {}).get("cache_bytes")
    mem_under = res.memray.get("leaked_under_load_path")
    deep = rep.get("deep_bytes")
    return {
        "baseline": baseline,
        "loop_start_rss": (rep.get("loop_start") or {}).get("rss"),
        "first_loop_cache": (rep.get("first_loop") or {}).get("cache_bytes"),
        "rss_warm": warm[1],
        "rss_end": s[-1][1],
        "pss_end": res.samples[-1][2],
        "peak": peak,
        "slope": slope,
        "slope_se": slope_stderr_mb_per_hour(s, warmup),
        "warmup": warmup,
        "fit_window": max(0.0, s[-1][0] - warmup),
        "versions": res.versions_end - res.versions_start,
        "redeploys": len(res.redeploys),
        "hits": hits,
        "misses": misses,
        "hit_ratio": hits / (hits + misses) if hits + misses else float("nan"),
        "loops": loops,
        "misses_per_loop": misses / loops if loops else float("nan"),
        "deser_per_min": misses / minutes if minutes else float("nan"),
        "entries": rep.get("entries"),
        "gauge": gauge,
        "memray_cache": mem_under,
        "memray_total": res.memray.get("leaked_total"),
        "deep": deep,
        "acct_err_memray": (gauge / mem_under - 1) if gauge and mem_under else None,
        "acct_err_deep": (gauge / deep - 1) if gauge and deep else None,
        "loop_mean": mean(res.loop_ms) if res.loop_ms else float("nan"),
        "loop_p50": median(res.loop_ms) if res.loop_ms else float("nan"),
        "loop_p95": percentile(res.loop_ms, 0.95),
        "reclaims": rep.get("reclaims", res.statsd.get("reclaims") or 0),
        "reclaim_ms": rep.get("reclaim_ms", sum(res.statsd.get("reclaim_ms") or [])),
        "trims": rep.get("trims"),
        "trim_ms": rep.get("trim_ms"),
        "gc_full": rep.get("gc_full"),
        "gc_full_ms": rep.get("gc_full_ms"),
    }


def _mb(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x / MB:.1f}"


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:+.1f}%"


def _f(x, fmt="{:.1f}") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def write_csv(out: Path, results: list[RunResult]) -> None:
    with open(out / "rss.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["config", "t_s", "rss_bytes", "pss_bytes"])
        for r in results:
            for t, rss, pss in r.samples:
                w.writerow([r.name, f"{t:.1f}", rss, pss])
    with open(out / "redeploys.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["config", "t_s"])
        for r in results:
            for t in r.redeploys:
                w.writerow([r.name, f"{t:.1f}"])


def plot(out: Path, results: list[RunResult], budget: int, warmup: float, airflow_version: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 6))
    colors = {"unbounded": "tab:red", "stock": "tab:orange", "reference": "tab:gray", "bytecache": "tab:blue"}
    for r in results:
        if not r.samples:
            continue
        ts = [t / 60 for t, _, _ in r.samples]
        ax.plot(ts, [x / MB for _, x, _ in r.samples], label=f"{LABELS[r.name]} RSS", color=colors[r.name], lw=1.5)
        ax.plot(ts, [x / MB for _, _, x in r.samples], color=colors[r.name], lw=0.8, ls=":", label=f"{r.name} PSS")
        ref = next((x for x in results if x.name == "reference" and x.samples), None)
        base = max(x for _, x, _ in ref.samples) if ref else baseline_of(r.report)
        if r.name == "bytecache" and base:
            ax.axhline(base / MB, color="tab:blue", lw=0.8, ls="--",
                       label="baseline (reference run's peak)" if ref else "baseline (bytecache RSS after the first loop)")
            ax.axhline((base + budget) / MB, color="tab:green", lw=1.2, ls="--", label=f"baseline + budget ({budget / MB:.0f} MB)")
            ax.axhline((base + budget + margin_mb(budget) * MB) / MB, color="tab:green", lw=0.8, ls=":", label="baseline + budget + margin")
    first = next((r for r in results if r.redeploys), None)
    if first:
        for i, t in enumerate(first.redeploys):
            ax.axvline(t / 60, color="grey", lw=0.4, alpha=0.4, label="redeploy" if i == 0 else None)
    ax.axvline(warmup / 60, color="black", lw=0.8, ls="-.", label="warm-up end")
    ax.set_xlabel("minutes since scheduler start")
    ax.set_ylabel("MB")
    ax.set_title(f"Airflow {airflow_version} scheduler memory under DAG-version churn".replace("  ", " "))
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "rss.png", dpi=110)
    plt.close(fig)


def write_summary(out: Path, args, spec: WorkloadSpec, results: list[RunResult], budget: int, warmup: float, active_bytes: int, setup: dict) -> Verdict | None:
    metrics = {r.name: run_metrics(r, warmup) for r in results}
    lines = [
        f"# Scheduler soak {time.strftime('%Y-%m-%d %H:%M:%S')}",
        "",
        f"Command: `{' '.join(sys.argv)}`",
        "",
        f"Airflow {args.airflow_version} ({BIN / 'python'}).",
        "",
        f"{describe_workload(spec, setup, active_bytes)}; "
        f"budget {_mb(budget)} MB; each run {args.duration:.0f} s, warm-up {warmup:.0f} s; "
        f"`[core] min_serialized_dag_update_interval` {args.min_update_interval} s; memray "
        f"{'off' if args.no_memray else ('detailed (native + python allocators)' if args.memray_detailed else 'on (`memray_trace_components = scheduler`)')}.",
        "",
        "| metric | " + " | ".join(LABELS[r.name] + (f" (from {r.source})" if r.source else "") for r in results) + " |",
        "|---|" + "---|" * len(results),
    ]

    def row(label, fn):
        lines.append(f"| {label} | " + " | ".join(fn(metrics[r.name]) if metrics[r.name] else "n/a" for r in results) + " |")

    row("RSS at scheduling-loop start, MB", lambda m: _mb(m["loop_start_rss"]))
    row("RSS after the first loop (baseline), MB", lambda m: _mb(m["baseline"]) + (f" (cache {_mb(m['first_loop_cache'])})" if m.get("first_loop_cache") is not None else ""))
    row("RSS at warm-up end, MB", lambda m: _mb(m["rss_warm"]))
    row("RSS at end, MB", lambda m: _mb(m["rss_end"]))
    row("PSS at end, MB", lambda m: _mb(m["pss_end"]))
    row("peak RSS, MB", lambda m: _mb(m["peak"]))
    row("peak − RSS after the first loop, MB", lambda m: _mb(m["peak"] - m["baseline"]))
    if "reference" in metrics and metrics["reference"]:
        ref_peak = metrics["reference"]["peak"]
        row("peak − reference run's peak, MB", lambda m: _mb(m["peak"] - ref_peak))
    row("warm-up excluded from the slope, s", lambda m: _f(m.get("warmup"), "{:.0f}"))
    row("slope after warm-up, MB/h (least squares) ± 1 s.e. (fit over minute means)",
        lambda m: _f(m["slope"]) + (f" ± {m['slope_se']:.1f}" if m.get("slope_se") is not None else ""))
    row("DAG versions created / redeploy ticks", lambda m: f"{m['versions']} / {m['redeploys']}")
    row("cache entries at end", lambda m: _f(m["entries"], "{}"))
    row("cache bytes gauge at end, MB", lambda m: _mb(m["gauge"]))
    row("memray: retained under the bag's load path at exit, MB", lambda m: _mb(m["memray_cache"]))
    row("memray: everything still allocated at exit, MB", lambda m: _mb(m["memray_total"]))
    row("deep size of the cached DAGs (pympler), MB", lambda m: _mb(m["deep"]))
    row("accounting error: gauge vs memray", lambda m: _pct(m["acct_err_memray"]))
    row("accounting error: gauge vs deep size", lambda m: _pct(m["acct_err_deep"]))
    row("lookups: hits / misses (hit ratio)", lambda m: f"{m['hits']:.0f} / {m['misses']:.0f} ({_f(m['hit_ratio'], '{:.2f}')})")
    row("scheduler loops; misses per loop", lambda m: f"{m['loops']}; {_f(m['misses_per_loop'], '{:.2f}')}")
    row("deserializations per minute", lambda m: _f(m["deser_per_min"]))
    row("scheduler_loop_duration mean / p50 / p95, ms", lambda m: f"{_f(m['loop_mean'], '{:.0f}')} / {_f(m['loop_p50'], '{:.0f}')} / {_f(m['loop_p95'], '{:.0f}')}")
    row("bytecache GC reclaims (total ms)", lambda m: f"{m['reclaims']:.0f} ({_f(m['reclaim_ms'], '{:.0f}')})" if m["reclaims"] is not None else "n/a")
    row("bytecache heap trims, malloc_trim (total ms)", lambda m: f"{m['trims']:.0f} ({_f(m['trim_ms'], '{:.0f}')})" if m.get("trims") is not None else "n/a")
    row("all full GC collections in the scheduler (total ms)", lambda m: f"{_f(m['gc_full'], '{}')} ({_f(m['gc_full_ms'], '{:.0f}')})")
    lines += [
        "",
        "Notes: the baseline is the scheduler's RSS after its first scheduling loop (start-up over: "
        "executor workers forked, first queries compiled; recorded by `profiling.bootstrap`); the margin is "
        "max(25% of the budget, 16 MB of RSS granularity: pymalloc/glibc arenas, memray's buffers). Slopes are least-squares fits of RSS over the samples after the warm-up. "
        "Hits/misses/loops are counted in the scheduler process; a miss is one deserialization. "
        "memray's figure is the memory still allocated when the tracker closed (after a `gc.collect()`), "
        "attributed to a stack through `_get_dag`/`_read_dag` of a `dagbag.py`"
        + ("" if args.memray_detailed else "; without `memray_detailed_tracing` memray sees pymalloc arenas, not objects, "
           "so this figure is arena-granular (see `profiling/dagbag_churn.py` for an object-exact accounting check)")
        + ". Per-run files: `<config>/memray-flamegraph.html` (peak), `memray-flamegraph-leaks.html` "
        "(retained at exit), `memray-stats.txt`, `memray-summary.txt`, `scheduler.log`, `scheduler-report.json`.",
        "",
    ]
    for r in results:
        if r.error:
            lines.append(f"- {r.name}: ERROR {r.error}")
    v = None
    ours = metrics.get("bytecache")
    ref = metrics.get("reference")
    if ours:
        if ref:
            base, base_what = ref["peak"], "the reference run's peak RSS"
        else:
            base, base_what = ours["baseline"], "the bytecache run's RSS after its first loop"
        lines.append(f"Verdict baseline: {base_what} ({_mb(base)} MB).")
        lines.append("")
        v = verdict(ours["slope"], ours["peak"], base, budget, ours["fit_window"], reference_slope=ref["slope"] if ref else None)
        abs_limit = 0.01 * budget / MB
        lines.append(
            f"Absolute bytecache slope {ours['slope']:.1f} MB/h vs 1% of the budget per hour ({abs_limit:.2f} MB/h): "
            f"{'met' if ours['slope'] <= abs_limit else 'not met'}; peak − baseline {_mb(ours['peak'] - base)} MB vs budget × 1.25 "
            f"({_mb(1.25 * budget)} MB): {'met' if ours['peak'] - base <= 1.25 * budget else 'not met'}; "
            f"{ours['versions']} versions in {ours['fit_window'] / 60 + warmup / 60:.1f} min."
        )
        lines.append("")
        others = ", ".join(f"{r.name} slope {metrics[r.name]['slope']:.1f} MB/h, peak − baseline {_mb(metrics[r.name]['peak'] - base)} MB"
                           for r in results if r.name not in ("bytecache", "reference") and metrics[r.name])
        if others:
            lines.append(f"Beside it: {others}.")
            lines.append("")
        lines.append(v.line())
    else:
        lines.append("RSS flat: no (the bytecache run produced no samples)")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    return v


# -- main ---------------------------------------------------------------------------------------
def prepare_template(work: Path, spec: WorkloadSpec, out: Path) -> tuple[Path, dict]:
    home = work / "template"
    (home / "plugins").mkdir(parents=True)
    write_dags(home / "dags", spec)
    env = airflow_env(home)
    log = out / "setup.log"
    t0 = time.time()
    with open(log, "ab") as f:
        subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, stdout=f, stderr=subprocess.STDOUT, check=True, timeout=600)
        r = subprocess.run([str(BIN / "python"), "-m", "profiling.workload", "prepare", "--dags-folder", str(home / "dags"), "--spec", spec.to_json()],
                           env=env, stdout=subprocess.PIPE, stderr=f, check=True, timeout=1200, cwd=str(ROOT))
    info = json.loads(r.stdout.decode().strip().splitlines()[-1])
    with sqlite3.connect(home / "airflow.db") as c:
        info["json_bytes"] = c.execute("SELECT sum(length(data)) FROM serialized_dag").fetchone()[0]
        active_ids = [p.dag_id for p in plan_dags(spec)[: spec.runs]]
        q = "SELECT sum(length(data)) FROM serialized_dag WHERE dag_id IN (%s)" % ",".join("?" * len(active_ids))
        info["active_json_bytes"] = c.execute(q, active_ids).fetchone()[0]
    info["tasks"] = sum(p.tasks for p in plan_dags(spec))
    info["seconds"] = time.time() - t0
    return home / "airflow.db", info


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CI-sized: (a) 100 s, (r) and (c) 180 s each, 64 DAGs")
    ap.add_argument("--minutes", type=float, help="minutes per configuration (soak mode)")
    ap.add_argument("--configs", help=f"comma-separated subset of {','.join(CONFIGS)}")
    ap.add_argument("--config-minutes", default="", help="per-configuration minutes, e.g. reference=12,stock=12 (default: --minutes)")
    ap.add_argument("--out", type=Path, help="report folder (default reports/soak-<timestamp>)")
    ap.add_argument("--dags", type=int, help="number of DAGs (quick 64, soak 250)")
    ap.add_argument("--size-mix", help="tasks:weight,... (default: quick mix / full mix, 10..2000 tasks)")
    ap.add_argument("--active-runs", type=int, help="running runs (default: one per DAG)")
    ap.add_argument("--redeploy-fraction", type=float, default=0.15, help="fraction of DAG files rewritten per tick")
    ap.add_argument("--redeploy-interval", type=float, default=5.0, help="seconds between redeploy ticks")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--budget", help="bytecache budget (e.g. 64MiB); default: half the active set, in MiB")
    ap.add_argument("--ttl", default="3600", help="[scheduler] dag_cache_ttl for the bytecache run")
    ap.add_argument("--policy", help="[scheduler] dag_cache_policy for the bytecache run (default: the integration's default)")
    ap.add_argument("--warmup", type=float, help="seconds of warm-up excluded from the slope (default: 45%% of the run, at most 10 min)")
    ap.add_argument("--min-update-interval", type=int, default=2, help="[core] min_serialized_dag_update_interval")
    ap.add_argument("--status-every", type=float, help="seconds between status lines (quick 15, soak 60)")
    ap.add_argument("--trace", action=argparse.BooleanOptionalAction, default=True, help="record the bytecache run's access trace")
    ap.add_argument("--memray-detailed", action="store_true", help="memray_detailed_tracing (native + pymalloc): exact but slow, big files")
    ap.add_argument("--no-memray", action="store_true")
    ap.add_argument("--keep-bin", action="store_true", help="keep the memray .bin files in the report folder")
    ap.add_argument("--keep-work", action="store_true", help="keep the Airflow homes (printed at the end)")
    ap.add_argument("--airflow", metavar="VERSION|PYTHON",
                    help="run Airflow (db migrate, dag-processor, scheduler) from another environment: a version such as "
                         "3.2.2 (the Makefile's .venv-3.2, `make venv-3.2`) or the path of that environment's python; "
                         "default: this interpreter's")
    ap.add_argument("--reference-from", type=Path, help="take the reference run (r) from an earlier report folder on the same workload instead of running it")
    args = ap.parse_args(argv)
    return args


def use_airflow(spec: str | None) -> tuple[str, int]:
    """Point :data:`BIN` at the environment whose Airflow the soak runs; return that Airflow's
    version and its scheduler's entry cap (``SCHEDULER_DAG_CACHE_SIZE``, 0 before 3.3: unbounded)."""
    global BIN
    if spec:
        looks_like_path = os.sep in spec or spec.startswith(".")
        python = Path(spec) if looks_like_path else ROOT / f".venv-{'.'.join(spec.split('.')[:2])}" / "bin" / "python"
        if not python.exists():
            raise SystemExit(f"--airflow {spec}: no {python} (make venv-{'.'.join(spec.split('.')[:2])} builds it)")
        BIN = python.parent  # not resolved: a venv's python is a symlink to the base interpreter
    probe = ("import airflow, airflow.jobs.scheduler_job_runner as r; "
             "print(airflow.__version__, getattr(r, 'SCHEDULER_DAG_CACHE_SIZE', 0))")
    with tempfile.TemporaryDirectory(prefix="bytecache-soak-probe-") as home:  # Airflow may write a default airflow.cfg
        r = subprocess.run([str(BIN / "python"), "-c", probe], capture_output=True, text=True, timeout=300,
                           env=airflow_env(Path(home)))
    if r.returncode:
        raise SystemExit(f"--airflow {spec}: cannot import Airflow from {BIN / 'python'}:\n{r.stderr[-2000:]}")
    version, cap = r.stdout.split()[-2:]
    if spec and not looks_like_path and not (version + ".").startswith(spec + "."):
        raise SystemExit(f"--airflow {spec}: {BIN / 'python'} has Airflow {version}")
    LABELS["stock"] = f"(b) stock Airflow {version} ({f'{cap}-entry LRU' if int(cap) else 'unbounded DAG dict'})"
    return version, int(cap)


def main(argv=None) -> int:
    args = parse_args(argv)
    from bytecache import parse_size

    args.airflow_version, stock_cap = use_airflow(args.airflow)

    if args.quick and args.minutes is None:
        # (r) and (c) need about two minutes to reach their plateau (every run touched, the cache
        # full and cycling); (a) only has to show that it does not stop growing.
        duration = 180.0
    else:
        duration = 60.0 * (args.minutes if args.minutes is not None else 10.0)
    args.duration = duration
    args.config_durations = {}
    for part in filter(None, (x.strip() for x in args.config_minutes.split(","))):
        k, _, v = part.partition("=")
        if k not in CONFIGS:
            print(f"unknown config {k!r} in --config-minutes", file=sys.stderr)
            return 2
        args.config_durations[k] = 60.0 * float(v)
    if args.quick and args.minutes is None:
        args.config_durations.setdefault("unbounded", 100.0)
    if args.configs:
        configs = [c.strip() for c in args.configs.split(",") if c.strip()]
        bad = [c for c in configs if c not in CONFIGS]
        if bad:
            print(f"unknown config(s) {bad}; choose from {CONFIGS}", file=sys.stderr)
            return 2
    else:
        configs = ["unbounded", "reference", "bytecache"] if args.quick else list(CONFIGS)
        if not stock_cap:  # before 3.3 the stock scheduler's cache is the unbounded one
            configs = ["stock", "bytecache"]
    needs_cap = [c for c in configs if c in ("unbounded", "reference")]
    if needs_cap and not stock_cap:
        print(f"configs {needs_cap} set Airflow 3.3's SCHEDULER_DAG_CACHE_SIZE; Airflow {args.airflow_version} has none "
              "(its stock cache is already unbounded: use --configs stock,bytecache)", file=sys.stderr)
        return 2
    mix = parse_size_mix(args.size_mix) if args.size_mix else (QUICK_SIZE_MIX if args.quick else DEFAULT_SIZE_MIX)
    spec = WorkloadSpec(
        n_dags=args.dags or (64 if args.quick else 250),
        size_mix=dict(mix),
        redeploy_fraction=args.redeploy_fraction,
        redeploy_interval=args.redeploy_interval,
        active_runs=args.active_runs,
        duration=duration,
        seed=args.seed,
    )
    warmup = args.warmup if args.warmup is not None else min(max(0.45 * duration, 30.0), 600.0)
    args.status_every = args.status_every or (15.0 if duration <= 600 else 60.0)
    out = args.out or ROOT / "reports" / f"soak-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bytecache-soak-"))

    atexit.register(cleanup_processes)
    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    statsd = StatsdListener()
    results: list[RunResult] = []
    status = 2
    try:
        t0 = time.time()
        print(f"soak: report folder {out}; work dir {work}", flush=True)
        print(f"soak: preparing the workload ({spec.n_dags} DAGs, seed {spec.seed}): airflow db migrate + first parse + runs ...", flush=True)
        template_db, setup = prepare_template(work, spec, out)
        active_bytes = int((setup["active_json_bytes"] or 0) * DEEP_PER_JSON)
        budget = parse_size(args.budget) if args.budget else max(MB, (active_bytes // 2) // MB * MB)
        print(
            f"soak: ready in {setup['seconds']:.0f}s: {setup['dags']} DAGs, {setup['tasks']} tasks, {setup['runs']} running runs, "
            f"JSON {_mb(setup['json_bytes'])} MB, active set ≈ {_mb(active_bytes)} MB deserialized; budget {_mb(budget)} MB; "
            f"configs {', '.join(configs)} × {duration:.0f}s",
            flush=True,
        )
        reference = None
        if args.reference_from:
            reference = load_reference(args.reference_from)
            their_summary = (args.reference_from / "summary.md").read_text()
            their_airflow = next((x.split()[1] for x in their_summary.splitlines() if x.startswith("Airflow ")), None)
            if their_airflow not in (None, args.airflow_version):  # None: a report from before the line existed
                raise ValueError(f"--reference-from {args.reference_from}: Airflow {their_airflow}, not {args.airflow_version}")
            theirs = workload_line(their_summary)
            if theirs != describe_workload(spec, setup, active_bytes):
                raise ValueError(f"--reference-from {args.reference_from}: another workload:\n  {theirs}\n  {describe_workload(spec, setup, active_bytes)}")
            configs = [c for c in configs if c != "reference"]
            print(f"soak: reference run (r) taken from {args.reference_from}", flush=True)
        for name in configs:
            if reference is not None and name == "bytecache":
                results.append(reference)
            print(f"soak: run {LABELS[name]}{' budget %s MB' % _mb(budget) if name == 'bytecache' else ''}", flush=True)
            try:
                results.append(run_config(name, args, spec, template_db, work, out, statsd, budget))
            except _Interrupted:
                raise
            except Exception as exc:
                print(f"soak: run {name} failed: {exc}", flush=True)
                results.append(RunResult(name, None, error=str(exc)))
        if reference is not None and not any(r is reference for r in results):
            results.append(reference)
        write_csv(out, results)
        plot(out, results, budget, warmup, args.airflow_version)
        v = write_summary(out, args, spec, results, budget, warmup, active_bytes, setup)
        trace = out / "bytecache" / "scheduler-trace.txt.gz"
        print((out / "summary.md").read_text(), flush=True)
        if trace.exists():
            print(f"soak: access trace {trace} (replay: python -m profiling.replay_trace {trace})")
        print(f"soak: plot {out / 'rss.png'}; summary {out / 'summary.md'}; took {(time.time() - t0) / 60:.1f} min", flush=True)
        status = 0 if v is not None and v.flat and not any(r.error for r in results) else 1
    except _Interrupted as exc:
        print(f"soak: interrupted ({exc}); stopping everything", flush=True)
        status = 130
    except Exception as exc:
        print(f"soak: failed: {exc!r}", flush=True)
        status = 2
    finally:
        cleanup_processes()
        statsd.close()
        for s, h in old.items():
            signal.signal(s, h)
        if args.keep_work:
            print(f"soak: Airflow homes kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
