"""The soak's data: what was asked (:class:`SoakSpec`) and what one run measured (:class:`RunRecord`).

Plain dataclasses of plain values, saved together as one ``results.json`` (:class:`SoakResults`)
by the runner and read back by the reporters: a saved run is re-rendered from this file alone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from profiling.workload import WorkloadSpec

RESULTS_FILE = "results.json"
FORMAT = 1

#: The configurations, in the order a soak runs them.
CONFIGS = ("unbounded", "stock", "reference", "bytecache")
LABELS = {
    "unbounded": "(a) pre-3.3 unbounded (CachedDBDagBag size 0, TTL 0)",
    "stock": "(b) stock Airflow (512-entry LRU)",  # relabelled with the version by SoakSpec.label
    "reference": "(r) reference: 1-entry cache",
    "bytecache": "(c) bytecache",
}
#: Configurations that run Airflow's own bag (our plugin stays out), and the scheduler's
#: ``SCHEDULER_DAG_CACHE_SIZE`` they set (None: Airflow's 512).
AIRFLOW_BAG_SIZES = {"unbounded": 0, "stock": None, "reference": 1}


@dataclass(frozen=True)
class SoakSpec:
    """Everything that decides what a soak measures; two runs of one spec are comparable."""

    workload: WorkloadSpec
    configs: tuple[str, ...]
    durations: dict[str, float]  # seconds per configuration
    budget: int | None = None  # bytes; None: half the active set (resolved into SoakResults.budget)
    warmup_fraction: float = 0.45  # of each run, excluded from the judged window
    max_warmup: float = 600.0
    # Work, not only time: on a loaded machine a scheduler loop can take several times longer.
    warmup_loops: int = 0  # the warm-up lasts at least until the scheduler finished this many loops
    min_loops: int = 0  # a run goes on past its duration until the scheduler finished this many loops ...
    max_stretch: float = 3.0  # ... but no longer than this many times its duration
    ttl: str = "3600"
    policy: str | None = None
    min_update_interval: int = 2
    memray: str = "default"  # "off" | "default" | "detailed"
    trace: bool = True
    sample_interval: float = 1.0
    # The Airflow the soak runs (its scheduler is the thing measured) and that release's
    # SCHEDULER_DAG_CACHE_SIZE (0: it has none -- before 3.3 the stock cache is an unbounded dict).
    airflow: str = ""
    airflow_cache_size: int = 512
    # Whether the scheduler's own bag can be capped in entries (profiling.bootstrap.entry_cap):
    # 3.3 by SCHEDULER_DAG_CACHE_SIZE, 3.2 by DBDagBag's cache_size; not 3.1.
    airflow_entry_cap: bool = True
    # All configurations at once, each with its own DB, Airflow home and statsd listener: on a
    # shared machine they then share the same load (one after another, the load differs by run).
    concurrent: bool = False
    # [scheduler] dag_cache_gc_freeze for the bytecache run; None: the setting's default
    gc_freeze: bool | None = None

    def __post_init__(self) -> None:
        if "unbounded" in self.configs and not self.airflow_cache_size:
            raise ValueError(
                f"--configs: unbounded sets Airflow 3.3's SCHEDULER_DAG_CACHE_SIZE; Airflow {self.airflow} has none "
                "(its stock cache is already unbounded: use --configs stock,bytecache)")
        if "reference" in self.configs and not self.airflow_entry_cap:
            raise ValueError(
                f"--configs: reference caps the scheduler's bag at 1 entry (3.3's SCHEDULER_DAG_CACHE_SIZE, 3.2's "
                f"DBDagBag cache_size); Airflow {self.airflow} has neither: use --configs stock,bytecache")

    def label(self, name: str) -> str:
        """The configuration's name in reports: the stock one says which Airflow and which cache."""
        if name != "stock" or not self.airflow:
            return LABELS[name]
        cache = f"{self.airflow_cache_size}-entry LRU" if self.airflow_cache_size else "unbounded DAG dict"
        return f"(b) stock Airflow {self.airflow} ({cache})"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["workload"] = json.loads(self.workload.to_json())
        d["configs"] = list(self.configs)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SoakSpec":
        d = dict(d)
        d["workload"] = WorkloadSpec.from_json(json.dumps(d["workload"]))
        d["configs"] = tuple(d["configs"])
        return cls(**d)

    def warmup_for(self, duration: float, loop_times: list[float] = ()) -> float:
        """Seconds at the start of a run of ``duration`` that the verdict does not judge: a share
        of the run, and at least until the scheduler finished ``warmup_loops`` loops."""
        warmup = min(max(self.warmup_fraction * duration, 20.0), self.max_warmup, 0.9 * duration)
        if self.warmup_loops and len(loop_times) >= self.warmup_loops:
            warmup = max(warmup, loop_times[self.warmup_loops - 1])
        return warmup

    def workload_key(self) -> dict:
        """What two soaks must share for one's reference run to stand in for the other's: the
        seeded workload, the Airflow whose scheduler does the work and the settings that shape it
        (not run lengths)."""
        w = json.loads(self.workload.to_json())
        w.pop("duration", None)
        return {"workload": w, "airflow": self.airflow, "min_update_interval": self.min_update_interval, "memray": self.memray}


@dataclass
class Sample:
    t: float  # seconds since the scheduler started
    rss: int
    pss: int
    uss: int
    load1: float  # the machine's 1-minute load average when sampled

    def row(self) -> list:
        return [self.t, self.rss, self.pss, self.uss, self.load1]

    @classmethod
    def from_row(cls, row: list) -> "Sample":
        return cls(float(row[0]), int(row[1]), int(row[2]), int(row[3]), float(row[4]))


@dataclass
class RunRecord:
    """One configuration's run: raw samples and what the scheduler and statsd reported."""

    name: str
    budget: int | None = None
    duration: float = 0.0
    warmup: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    redeploys: list[float] = field(default_factory=list)  # seconds since start
    versions_start: int = 0
    versions_end: int = 0
    scheduler: dict = field(default_factory=dict)  # profiling.bootstrap's exit report
    statsd: dict = field(default_factory=dict)  # counters and last gauges received
    loop_ms: list[float] = field(default_factory=list)  # scheduler_loop_duration timings
    loop_times: list[float] = field(default_factory=list)  # when each loop's timing arrived, s since start
    memray: dict = field(default_factory=dict)  # figures read from memray's file, if traced
    error: str | None = None
    source: str | None = None  # the results.json a reused run came from (--reference-from)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["samples"] = [s.row() for s in self.samples]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunRecord":
        d = dict(d)
        d["samples"] = [Sample.from_row(r) for r in d.get("samples", [])]
        return cls(**d)


@dataclass
class SoakResults:
    spec: SoakSpec
    budget: int  # bytes, as resolved
    setup: dict  # the template's facts: dags, tasks, runs, json_bytes, active_json_bytes, seconds
    runs: list[RunRecord] = field(default_factory=list)
    command: str = ""
    started: str = ""
    finished: str = ""
    host: dict = field(default_factory=dict)

    def run(self, name: str) -> RunRecord | None:
        return next((r for r in self.runs if r.name == name), None)

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "spec": self.spec.to_dict(),
            "budget": self.budget,
            "setup": self.setup,
            "runs": [r.to_dict() for r in self.runs],
            "command": self.command,
            "started": self.started,
            "finished": self.finished,
            "host": self.host,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "SoakResults":
        if d.get("format") != FORMAT:
            raise ValueError(f"results format {d.get('format')!r} is not {FORMAT}")
        return cls(
            spec=SoakSpec.from_dict(d["spec"]),
            budget=d["budget"],
            setup=d["setup"],
            runs=[RunRecord.from_dict(r) for r in d["runs"]],
            command=d.get("command", ""),
            started=d.get("started", ""),
            finished=d.get("finished", ""),
            host=d.get("host", {}),
        )

    def save(self, folder: Path) -> Path:
        path = Path(folder) / RESULTS_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, default=str))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, folder: Path) -> "SoakResults":
        path = Path(folder)
        if path.is_dir():
            path = path / RESULTS_FILE
        if not path.exists():
            raise FileNotFoundError(f"no {RESULTS_FILE} in {folder}")
        return cls.from_dict(json.loads(path.read_text()))


def reused_reference(earlier: SoakResults, spec: SoakSpec, origin: str) -> RunRecord:
    """The reference run of an ``earlier`` soak, to judge this one's bytecache run against.

    The reference does not depend on bytecache's code, so a long one can be measured once; the
    specs' workload keys must match (same seeded DAGs, redeploys and scheduler settings)."""
    ours, theirs = spec.workload_key(), earlier.spec.workload_key()
    if ours != theirs:
        diff = {k: (theirs.get(k), ours.get(k)) for k in ours if ours.get(k) != theirs.get(k)}
        raise ValueError(f"--reference-from {origin}: another workload (theirs, ours): {diff}")
    ref = earlier.run("reference")
    if ref is None or not ref.samples:
        raise ValueError(f"--reference-from {origin}: it has no reference run with samples")
    return replace(ref, source=origin)
