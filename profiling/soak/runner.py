"""Running a soak: the template Airflow home, one real dag-processor + scheduler per
configuration, sampling, statsd, and the records they leave (``profiling.soak.model``).

Each configuration starts from a copy of one migrated and prepared SQLite DB; the redeployer
rewrites DAG files on the spec's schedule; the scheduler runs under ``profiling.bootstrap``
(counts, the exit report with the deep walk of the cached DAGs, the access trace). Every
process runs in its own process group and is stopped on exit, failure and signals.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from profiling import memray_files
from profiling.soak.model import AIRFLOW_BAG_SIZES, RunRecord, Sample, SoakResults, SoakSpec
from profiling.soak.statsd import StatsdListener
from profiling.units import MiB, mib
from profiling.workload import DEEP_PER_JSON, Redeployer, airflow_env, plan_dags, write_dags

ROOT = Path(__file__).resolve().parents[2]
Log = Callable[[str], None]


@dataclass(frozen=True)
class AirflowInstall:
    """The environment whose Airflow the soak runs (db migrate, dag-processor, scheduler)."""

    bin: Path  # its bin folder: ``python`` and ``airflow`` in it
    version: str
    cache_size: int  # its scheduler's SCHEDULER_DAG_CACHE_SIZE; 0 before 3.3 (none: an unbounded dict)
    entry_cap: bool = True  # its scheduler's bag can be capped in entries (profiling.bootstrap.entry_cap)

    @property
    def python(self) -> str:
        return str(self.bin / "python")


def find_airflow(choice: str | None = None) -> AirflowInstall:
    """The Airflow of ``choice``: a version such as ``3.2.2`` (the Makefile's ``.venv-3.2``), the
    path of an environment's python, or None for this interpreter's; its version is checked."""
    bin_dir = Path(sys.executable).parent
    looks_like_path = bool(choice) and (os.sep in choice or choice.startswith("."))
    if choice:
        minor = ".".join(choice.split(".")[:2])
        python = Path(choice) if looks_like_path else ROOT / f".venv-{minor}" / "bin" / "python"
        if not python.exists():
            raise ValueError(f"--airflow {choice}: no {python}" + ("" if looks_like_path else f" (make venv-{minor} builds it)"))
        bin_dir = python.parent  # not resolved: a venv's python is a symlink to the base interpreter
    probe = ("import airflow, airflow.jobs.scheduler_job_runner as r; from profiling.bootstrap import entry_cap; "
             "print(airflow.__version__, getattr(r, 'SCHEDULER_DAG_CACHE_SIZE', 0), int(entry_cap(r) is not None))")
    with tempfile.TemporaryDirectory(prefix="bytecache-soak-probe-") as home:  # Airflow may write a default airflow.cfg
        r = subprocess.run([str(bin_dir / "python"), "-c", probe], capture_output=True, text=True, timeout=300,
                           env=airflow_env(Path(home)), cwd=str(ROOT))
    if r.returncode:
        raise ValueError(f"--airflow {choice or sys.executable}: cannot import Airflow from {bin_dir / 'python'}:\n{r.stderr[-2000:]}")
    version, cap, capped = r.stdout.split()[-3:]
    if choice and not looks_like_path and not (version + ".").startswith(choice + "."):
        raise ValueError(f"--airflow {choice}: {bin_dir / 'python'} has Airflow {version}")
    return AirflowInstall(bin_dir, version, int(cap), capped == "1")


class Interrupted(BaseException):  # like KeyboardInterrupt: no "except Exception" may swallow it
    pass


class ProcessGroups:
    """The processes a soak started, each the leader of its own process group."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
        with open(log, "ab") as f:
            p = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True, cwd=str(ROOT))
        self.procs.append(p)
        return p

    @staticmethod
    def _signal_group(p: subprocess.Popen, sig: int) -> None:
        try:
            os.killpg(p.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, p: subprocess.Popen, timeout: float, log: Log = print) -> int | None:
        """SIGTERM the leader (graceful: the scheduler writes its report, memray closes its file),
        again every 20 s (a signal landing in a gc callback is swallowed), then the whole group."""
        deadline = time.time() + timeout
        while p.poll() is None and time.time() < deadline:
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=min(20.0, max(0.1, deadline - time.time())))
            except subprocess.TimeoutExpired:
                pass
        if p.poll() is None:
            log(f"  pid {p.pid} did not exit in {timeout:.0f}s; killing its group")
        self._signal_group(p, signal.SIGTERM)
        try:
            p.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass
        self._signal_group(p, signal.SIGKILL)  # workers left in the group, if any
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        if p in self.procs:
            self.procs.remove(p)
        return p.returncode

    def stop_all(self) -> None:
        for p in list(self.procs):
            self.stop(p, timeout=15)


def count_versions(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
            return int(c.execute("SELECT count(*) FROM dag_version").fetchone()[0])
    except sqlite3.Error:
        return -1


def sample_process(pid: int, t: float) -> Sample | None:
    import psutil

    try:
        m = psutil.Process(pid).memory_full_info()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return Sample(round(t, 2), m.rss, getattr(m, "pss", 0), getattr(m, "uss", 0), os.getloadavg()[0])


def prepare_template(work: Path, spec: SoakSpec, out: Path, airflow: AirflowInstall) -> tuple[Path, dict]:
    """One migrated DB with the workload parsed and its runs created; facts about it."""
    home = work / "template"
    (home / "plugins").mkdir(parents=True)
    write_dags(home / "dags", spec.workload)
    env = airflow_env(home)
    t0 = time.time()
    with open(out / "setup.log", "ab") as f:
        subprocess.run([str(airflow.bin / "airflow"), "db", "migrate"], env=env, stdout=f, stderr=subprocess.STDOUT, check=True, timeout=600)
        r = subprocess.run([airflow.python, "-m", "profiling.workload", "prepare", "--dags-folder", str(home / "dags"),
                            "--spec", spec.workload.to_json()],
                           env=env, stdout=subprocess.PIPE, stderr=f, check=True, timeout=1200, cwd=str(ROOT))
    setup = json.loads(r.stdout.decode().strip().splitlines()[-1])
    plans = plan_dags(spec.workload)
    active_ids = [p.dag_id for p in plans[: spec.workload.runs]]
    with sqlite3.connect(home / "airflow.db") as c:
        setup["json_bytes"] = c.execute("SELECT sum(length(data)) FROM serialized_dag").fetchone()[0]
        q = "SELECT sum(length(data)) FROM serialized_dag WHERE dag_id IN (%s)" % ",".join("?" * len(active_ids))
        setup["active_json_bytes"] = c.execute(q, active_ids).fetchone()[0]
    setup["tasks"] = sum(p.tasks for p in plans)
    setup["active_bytes_estimate"] = int((setup["active_json_bytes"] or 0) * DEEP_PER_JSON)
    setup["seconds"] = time.time() - t0
    return home / "airflow.db", setup


def default_budget(setup: dict) -> int:
    """Half the active set's estimated deserialized size, rounded down to whole MiB."""
    return max(MiB, (setup["active_bytes_estimate"] // 2) // MiB * MiB)


def airflow_settings(statsd_port: int, spec: SoakSpec) -> dict[str, str]:
    """What every process of every configuration shares."""
    return {
        "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": str(spec.min_update_interval),
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",  # changed files are re-parsed at once anyway
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__DAG_PROCESSOR__FILE_PARSING_SORT_MODE": "modified_time",
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(statsd_port),
        "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }


def cache_settings(name: str, spec: SoakSpec, budget: int) -> dict[str, str]:
    """The scheduler's DAG-cache settings for one configuration."""
    if name in AIRFLOW_BAG_SIZES:  # Airflow's own bag; our plugin leaves it in place
        env = {"AIRFLOW__SCHEDULER__DAG_CACHE_POLICY": "airflow"}
        if AIRFLOW_BAG_SIZES[name] is not None:
            env["BYTECACHE_PROFILE_DAG_CACHE_SIZE"] = str(AIRFLOW_BAG_SIZES[name])
        return env
    # an explicit unit: a small bare number is refused (the 16 MiB floor for bare budgets)
    env = {"AIRFLOW__SCHEDULER__DAG_CACHE_MAX_BYTES": f"{budget}B", "AIRFLOW__SCHEDULER__DAG_CACHE_TTL": spec.ttl}
    if spec.policy:
        env["AIRFLOW__SCHEDULER__DAG_CACHE_POLICY"] = spec.policy
    if spec.gc_freeze is not None:
        env["AIRFLOW__SCHEDULER__DAG_CACHE_GC_FREEZE"] = str(spec.gc_freeze)
    return env


def profiling_settings(name: str, spec: SoakSpec, rundir: Path) -> dict[str, str]:
    env = {
        "AIRFLOW__PROFILING__MEMRAY_TRACE_COMPONENTS": "" if spec.memray == "off" else "scheduler",
        "AIRFLOW__PROFILING__MEMRAY_DETAILED_TRACING": "True" if spec.memray == "detailed" else "False",
        "BYTECACHE_PROFILE_REPORT": str(rundir / "scheduler-report.json"),
        # the deep walk of the cached DAGs at exit: only where there is a gauge to check
        "BYTECACHE_PROFILE_DEEP": "1" if name == "bytecache" else "0",
        # then the memory the scheduler gets back when that cache is dropped: its real footprint
        "BYTECACHE_PROFILE_RELEASE": "1" if name == "bytecache" else "0",
    }
    if spec.trace and name == "bytecache":
        env["BYTECACHE_PROFILE_TRACE"] = str(rundir / "scheduler-trace.txt.gz")
    return env


def statsd_figures(statsd: StatsdListener) -> dict:
    prefix = "scheduler.dag_bag."
    figures = {k: statsd.counter(prefix + k) for k in ("cache_hit", "cache_miss", "cache_reclaims")}
    for k in ("cache_bytes", "cache_max_bytes", "cache_uncollected_bytes", "cache_size"):
        figures[k] = statsd.gauge(prefix + k)
    figures["reclaim_ms"] = statsd.timer(prefix + "cache_reclaim_duration")
    figures["packets"] = statsd.packets
    return figures


def run_config(name: str, spec: SoakSpec, budget: int, template_db: Path, work: Path, out: Path,
               statsd: StatsdListener, procs: ProcessGroups, status_every: float, keep_bin: bool, log: Log,
               airflow: AirflowInstall) -> RunRecord:
    duration = spec.durations[name]
    rec = RunRecord(name, budget if name == "bytecache" else None)
    home = work / name
    shutil.rmtree(home, ignore_errors=True)
    (home / "plugins").mkdir(parents=True)
    shutil.copy(template_db, home / "airflow.db")
    plans = write_dags(home / "dags", spec.workload)
    rundir = out / name
    rundir.mkdir(parents=True, exist_ok=True)
    env = airflow_env(home, **airflow_settings(statsd.port, spec))
    sched_env = {**env, **cache_settings(name, spec, budget), **profiling_settings(name, spec, rundir)}
    statsd.reset()
    rec.versions_start = count_versions(home / "airflow.db")
    t_start = time.time()
    dagp = procs.start([str(airflow.bin / "airflow"), "dag-processor"], env, rundir / "dag-processor.log")
    sched = procs.start([airflow.python, "-m", "profiling.bootstrap", "scheduler", "--skip-serve-logs"], sched_env, rundir / "scheduler.log")
    redeployer = Redeployer(home / "dags", spec.workload, plans, on_event=lambda ev: rec.redeploys.append(round(ev.t - t_start, 2)))
    redeployer.start(duration=spec.max_stretch * duration)  # stopped with the run

    def loops() -> int:
        return len(statsd.timer_arrivals("scheduler.scheduler_loop_duration"))

    def done(elapsed: float) -> bool:
        return elapsed >= spec.max_stretch * duration or (elapsed >= duration and loops() >= spec.min_loops)

    next_status, next_sample = t_start + status_every, t_start
    try:
        while not done((now := time.time()) - t_start):
            for what, p in (("scheduler", sched), ("dag-processor", dagp)):
                if p.poll() is not None:
                    raise RuntimeError(f"{what} exited early with status {p.returncode}; see {rundir / (what + '.log')}")
            s = sample_process(sched.pid, now - t_start)
            if s is not None:
                rec.samples.append(s)
            if now >= next_status and s is not None:
                next_status += status_every
                cb = statsd.gauge("scheduler.dag_bag.cache_bytes")
                log(f"  [{name}] {s.t:6.0f}s  RSS {mib(s.rss):>7} MiB  PSS {mib(s.pss):>7} MiB  "
                    f"versions +{count_versions(home / 'airflow.db') - rec.versions_start:<5d} rewrites {redeployer.rewrites:<5d} "
                    f"misses {statsd.counter('scheduler.dag_bag.cache_miss'):<6.0f} loops {loops():<4d} cache {mib(cb)} MiB  load {s.load1:.1f}")
            next_sample += spec.sample_interval
            time.sleep(max(0.0, next_sample - time.time()))
    except Interrupted:
        raise
    except Exception as exc:  # the record keeps what was measured, and says why it stopped
        rec.error = str(exc)
    finally:
        redeployer.stop()
        rec.duration = time.time() - t_start
        rec.versions_end = count_versions(home / "airflow.db")
        procs.stop(sched, timeout=120, log=log)
        procs.stop(dagp, timeout=20, log=log)
        statsd.settle()
        report = rundir / "scheduler-report.json"
        if report.exists():
            rec.scheduler = json.loads(report.read_text())
        rec.statsd = statsd_figures(statsd)
        rec.loop_ms = statsd.timer("scheduler.scheduler_loop_duration")
        rec.loop_times = [round(t - t_start, 2) for t in statsd.timer_arrivals("scheduler.scheduler_loop_duration")]
        rec.warmup = spec.warmup_for(duration, rec.loop_times)
    bin_path = home / "scheduler_memory.bin"
    if bin_path.exists():
        dest = rundir / "scheduler_memory.bin"
        shutil.move(str(bin_path), dest)
        if name != "reference":  # the reference only provides the baseline
            log(f"  [{name}] memray: {mib(dest.stat().st_size)} MiB capture; rendering flamegraphs, stats, summary")
            try:
                rec.memray = memray_files.retained_bytes(dest)
                rec.memray["outputs"] = memray_files.render(dest, rundir, python=airflow.python)
            except Exception as exc:  # a truncated file must not lose the rest of the record
                rec.memray = {"error": repr(exc)}
        if not keep_bin:
            dest.unlink()
    return rec


def _on_signal(signum, frame):
    raise Interrupted(f"signal {signum}")


def _run_concurrently(names: list[str], run_one: Callable[[str, StatsdListener], RunRecord]) -> dict[str, RunRecord]:
    """``run_one`` for every configuration at once, each in a thread with its own statsd listener.

    Signals reach the main thread (it waits here); on one the runner's ``finally`` stops every
    process, and each thread then records its run as failed."""
    records: dict[str, RunRecord] = {}
    listeners = {name: StatsdListener() for name in names}

    def target(name: str) -> None:
        try:
            records[name] = run_one(name, listeners[name])
        except BaseException as exc:  # Interrupted: the main thread stops the processes
            records[name] = RunRecord(name, error=repr(exc))

    threads = [threading.Thread(target=target, args=(n,), name=f"soak-{n}", daemon=True) for n in names]
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(timeout=1.0)
    finally:
        for listener in listeners.values():
            listener.close()
    return records


def run_soak(spec: SoakSpec, out: Path, work: Path, *, reference: RunRecord | None = None, status_every: float = 15.0,
             keep_bin: bool = False, command: str = "", log: Log = print, airflow: AirflowInstall | None = None) -> SoakResults:
    """Prepare the workload, run every configuration of ``spec`` in order (or all at once with
    ``spec.concurrent``), save ``results.json`` after each run (a failed or interrupted soak keeps
    what it measured)."""
    airflow = airflow or find_airflow()
    if (airflow.version, airflow.cache_size) != (spec.airflow, spec.airflow_cache_size):
        raise ValueError(f"the spec is for Airflow {spec.airflow}, {airflow.python} runs {airflow.version}")
    procs = ProcessGroups()
    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    statsd = StatsdListener()
    try:
        log(f"soak: preparing the workload ({spec.workload.n_dags} DAGs, seed {spec.workload.seed}): "
            "airflow db migrate + first parse + runs ...")
        template_db, setup = prepare_template(work, spec, out, airflow)
        budget = spec.budget or default_budget(setup)
        results = SoakResults(spec, budget, setup, command=command, started=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                              host={"cpus": os.cpu_count(), "python": sys.version.split()[0], "airflow_python": airflow.python, "load_at_start": os.getloadavg()})
        log(f"soak: ready in {setup['seconds']:.0f}s: {setup['dags']} DAGs, {setup['tasks']} tasks, {setup['runs']} running runs, "
            f"JSON {mib(setup['json_bytes'])} MiB, active set ≈ {mib(setup['active_bytes_estimate'])} MiB deserialized; "
            f"budget {mib(budget)} MiB; configs {', '.join(spec.configs)}")
        def run_one(name: str, listener: StatsdListener) -> RunRecord:
            log(f"soak: run {spec.label(name)} for {spec.durations[name]:.0f}s" + (f", budget {mib(budget)} MiB" if name == "bytecache" else ""))
            try:
                rec = run_config(name, spec, budget, template_db, work, out, listener, procs, status_every, keep_bin, log, airflow)
            except Interrupted:
                raise
            except Exception as exc:
                rec = RunRecord(name, error=str(exc))
            if rec.error:
                log(f"soak: run {name} failed: {rec.error}")
            return rec

        names = [n for n in spec.configs if not (n == "reference" and reference is not None)]
        if spec.concurrent:
            records = _run_concurrently(names, run_one)
        for name in spec.configs:
            if name == "reference" and reference is not None:
                log(f"soak: reference run (r) taken from {reference.source}")
                results.runs.append(replace(reference))
                continue
            results.runs.append(records[name] if spec.concurrent else run_one(name, statsd))
            results.save(out)
        results.finished = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        results.save(out)
        return results
    finally:
        procs.stop_all()
        statsd.close()
        for s, h in old.items():
            signal.signal(s, h)
