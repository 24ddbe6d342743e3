"""A deterministic DAG workload for profiling the scheduler's DAG cache.

* :func:`plan_dags` picks, from a seed, each DAG's size (10 to 2,000 tasks by a size mix) and
  shape (``chain``, ``fanout``, ``groups`` of ten tasks in TaskGroups);
* :func:`write_dags` writes one file per DAG; every task is a ``BashOperator`` running ``true``
  (the scheduler completes EmptyOperator tasks by itself; with ``default_pool`` at 0 slots these
  stay scheduled, so their runs stay running and the scheduler visits them every sweep);
* :func:`prepare_db` (run inside an Airflow environment, e.g. ``python -m profiling.workload
  prepare``) parses the folder once, writes the serialized DAGs, unpauses everything, sets
  ``default_pool`` to 0 slots and creates one running run for each of the first ``active_runs``
  DAGs;
* :class:`Redeployer` rewrites ``redeploy_fraction`` of the files every ``redeploy_interval``
  seconds, bumping a version string in ``doc_md``: the serialized DAG changes, so the
  dag-processor writes a new ``dag_version`` (a run's task instances move to the latest version
  when the scheduler examines it, so the next change makes yet another version). The sequence of
  rewritten DAGs depends only on the seed.

The driver side of this module (planning, writing, redeploying) needs only the standard library.

    python -m profiling.workload write --dags-folder DIR [--dags 60 --seed 1 ...]
    python -m profiling.workload prepare --dags-folder DIR [--active-runs N ...]   # AIRFLOW_* env set
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

__all__ = [
    "SHAPES",
    "DEFAULT_SIZE_MIX",
    "QUICK_SIZE_MIX",
    "parse_size_mix",
    "WorkloadSpec",
    "DagPlan",
    "plan_dags",
    "render_dag",
    "write_dags",
    "redeploy_batches",
    "Redeployer",
    "airflow_env",
    "prepare_db",
    "prepare_folder",
    "DagClass",
    "WEIGHING_CLASSES",
    "render_class_dag",
    "write_class_dags",
]

SHAPES = ("chain", "fanout", "groups")
#: tasks -> relative weight. Most DAGs are small, a few are big (the big ones hold most bytes).
DEFAULT_SIZE_MIX: dict[int, float] = {10: 40, 50: 25, 200: 20, 500: 10, 1000: 4, 2000: 1}
#: The ``--quick`` mix: the same range, weighted to mid-size DAGs so a few minutes churn enough bytes.
QUICK_SIZE_MIX: dict[int, float] = {10: 20, 50: 20, 200: 25, 500: 20, 1000: 12, 2000: 3}
BUNDLE_NAME = "dags-folder"
#: Deserialized bytes per byte of serialized JSON for these BashOperator DAGs, used only to size
#: default budgets (the integration's Calibrator measured 6.6-7.1 on them; FACTS.md's 3.5-4.3 is
#: for EmptyOperator-heavy DAGs).
DEEP_PER_JSON = 6.5
DAG_PREFIX = "prof_"


def parse_size_mix(text: str) -> dict[int, float]:
    """``"10:40,200:20,2000:1"`` -> ``{10: 40.0, 200: 20.0, 2000: 1.0}``."""
    mix: dict[int, float] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        tasks, _, weight = part.partition(":")
        n, w = int(tasks), float(weight or 1)
        if n < 1 or w < 0:
            raise ValueError(f"bad size mix entry {part!r}: need tasks >= 1 and weight >= 0")
        mix[n] = w
    if not mix or not any(mix.values()):
        raise ValueError(f"empty size mix {text!r}")
    return mix


@dataclass
class WorkloadSpec:
    n_dags: int = 60
    size_mix: dict[int, float] = field(default_factory=lambda: dict(QUICK_SIZE_MIX))
    redeploy_fraction: float = 0.1  # of all DAG files, per tick
    redeploy_interval: float = 10.0  # seconds between ticks
    active_runs: int | None = None  # running runs (one per DAG, the first N DAGs); None = all
    duration: float = 120.0  # seconds the redeployer runs
    seed: int = 1

    def to_json(self) -> str:
        d = asdict(self)
        d["size_mix"] = {str(k): v for k, v in self.size_mix.items()}
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "WorkloadSpec":
        d = json.loads(text)
        d["size_mix"] = {int(k): float(v) for k, v in d["size_mix"].items()}
        return cls(**d)

    @property
    def runs(self) -> int:
        return self.n_dags if self.active_runs is None else min(self.active_runs, self.n_dags)

    def per_tick(self) -> int:
        return max(1, round(self.redeploy_fraction * self.n_dags)) if self.redeploy_fraction > 0 else 0


@dataclass(frozen=True)
class DagPlan:
    index: int
    dag_id: str
    tasks: int
    shape: str

    @property
    def filename(self) -> str:
        return f"{self.dag_id}.py"


def plan_dags(spec: WorkloadSpec) -> list[DagPlan]:
    """Each DAG's id, size and shape, from the seed only."""
    rng = random.Random(f"plan-{spec.seed}")
    sizes = sorted(spec.size_mix)
    weights = [spec.size_mix[s] for s in sizes]
    plans = []
    for i in range(spec.n_dags):
        tasks = rng.choices(sizes, weights)[0]
        shape = SHAPES[rng.randrange(len(SHAPES))]
        plans.append(DagPlan(i, f"{DAG_PREFIX}{i:04d}_{shape}_{tasks}", tasks, shape))
    return plans


_HEADER = '''\
# Generated by profiling.workload (seed {seed}); rewritten by its redeployer. Do not edit.
from datetime import datetime

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, TaskGroup

N_TASKS = {tasks}
VERSION = {version}

with DAG(
    dag_id="{dag_id}",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    doc_md=f"Profiling workload DAG, shape {shape}, deploy version {{VERSION}}.",
    tags=["profiling", "{shape}"],
) as dag:
'''

_BODIES = {
    "chain": '''\
    prev = None
    for i in range(N_TASKS):
        t = BashOperator(task_id=f"step_{i:04d}", bash_command="true")
        if prev is not None:
            prev >> t
        prev = t
''',
    "fanout": '''\
    start = BashOperator(task_id="start", bash_command="true")
    end = BashOperator(task_id="end", bash_command="true")
    for i in range(max(N_TASKS - 2, 1)):
        start >> BashOperator(task_id=f"leaf_{i:04d}", bash_command="true") >> end
''',
    "groups": '''\
    prev = None
    for g in range(max(N_TASKS // 10, 1)):
        with TaskGroup(group_id=f"group_{g:03d}") as tg:
            inner = None
            for i in range(min(10, N_TASKS)):
                t = BashOperator(task_id=f"task_{i}", bash_command="true")
                if inner is not None:
                    inner >> t
                inner = t
        if prev is not None:
            prev >> tg
        prev = tg
''',
}


def render_dag(plan: DagPlan, version: int, seed: int = 0) -> str:
    return _HEADER.format(seed=seed, tasks=plan.tasks, version=version, dag_id=plan.dag_id, shape=plan.shape) + _BODIES[plan.shape]


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # the dag-processor never sees half a file


def write_dags(folder: Path | str, spec: WorkloadSpec, version: int = 1) -> list[DagPlan]:
    """Write every DAG file at ``version``; return the plans."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plans = plan_dags(spec)
    for plan in plans:
        _write_atomic(folder / plan.filename, render_dag(plan, version, spec.seed))
    return plans


def redeploy_batches(spec: WorkloadSpec, ticks: int) -> list[list[int]]:
    """The DAG indices rewritten at each of the first ``ticks`` ticks (seeded)."""
    rng = random.Random(f"redeploy-{spec.seed}")
    k = min(spec.per_tick(), spec.n_dags)
    return [sorted(rng.sample(range(spec.n_dags), k)) for _ in range(ticks)]


@dataclass
class RedeployEvent:
    t: float  # time.time()
    tick: int
    dags: int  # files rewritten


class Redeployer:
    """Rewrites a seeded sample of DAG files every ``spec.redeploy_interval`` seconds, in a thread."""

    def __init__(
        self,
        folder: Path | str,
        spec: WorkloadSpec,
        plans: list[DagPlan] | None = None,
        on_event: Callable[[RedeployEvent], None] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.spec = spec
        self.plans = plans if plans is not None else plan_dags(spec)
        self.versions = {p.index: 1 for p in self.plans}
        self.on_event = on_event
        self.events: list[RedeployEvent] = []
        self.rewrites = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rng = random.Random(f"redeploy-{spec.seed}")

    def tick(self, tick: int) -> RedeployEvent:
        k = min(self.spec.per_tick(), self.spec.n_dags)
        chosen = sorted(self._rng.sample(range(self.spec.n_dags), k))
        for i in chosen:
            self.versions[i] += 1
            plan = self.plans[i]
            _write_atomic(self.folder / plan.filename, render_dag(plan, self.versions[i], self.spec.seed))
        self.rewrites += len(chosen)
        ev = RedeployEvent(time.time(), tick, len(chosen))
        self.events.append(ev)
        if self.on_event is not None:
            self.on_event(ev)
        return ev

    def _run(self, until: float) -> None:
        tick = 0
        while not self._stop.wait(self.spec.redeploy_interval):
            if time.time() >= until:
                return
            tick += 1
            self.tick(tick)

    def start(self, duration: float | None = None) -> None:
        if self.spec.per_tick() == 0:
            return
        until = time.time() + (self.spec.duration if duration is None else duration)
        self._thread = threading.Thread(target=self._run, args=(until,), name="redeployer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


# -- DAG classes for weighing: operator kinds, sizes, string-heavy DAGs ------------------------
@dataclass(frozen=True)
class DagClass:
    """A kind of DAG a deployment mixes: ``tasks`` tasks of one ``operator`` in a chain, with
    ``doc_kib`` KiB of ``doc_md`` on the DAG and ``params`` DAG params of ``param_chars`` chars each."""

    name: str
    operator: str  # "bash" or "python"
    tasks: int
    doc_kib: int = 0
    params: int = 0
    param_chars: int = 0


#: The mix the weighing accuracy is measured on (``profiling.weighing_accuracy``): 5 to 5,000
#: tasks, both operator kinds, and one string-heavy class (large doc_md, many long params).
WEIGHING_CLASSES: tuple[DagClass, ...] = (
    DagClass("bash_5", "bash", 5),
    DagClass("python_50", "python", 50),
    DagClass("bash_500", "bash", 500),
    DagClass("python_2000", "python", 2000),
    DagClass("bash_5000", "bash", 5000),
    DagClass("python_20_docs", "python", 20, doc_kib=256, params=200, param_chars=400),
)

_CLASS_TEMPLATE = '''\
# Generated by profiling.workload (DAG class {name}). Do not edit.
from datetime import datetime

from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, Param


def work(**context):
    return None


DOC = "".join(f"## Section {{i}}\\n\\nThis DAG {{{dag_id!r}}} does step {{i}} of the job; see the runbook.\\n\\n" for i in range({doc_sections}))
PARAMS = {{f"param_{{i:03d}}": Param("v" * {param_chars}, type="string", description=f"setting {{i}}") for i in range({params})}}

with DAG(
    dag_id={dag_id!r},
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    doc_md=DOC or None,
    params=PARAMS,
    tags=["weighing", {name!r}{deploy_tag}],
) as dag:
    prev = None
    for i in range({tasks}):
        t = {operator}
        if prev is not None:
            prev >> t
        prev = t
'''

_OPERATORS = {
    "bash": 'BashOperator(task_id=f"step_{i:05d}", bash_command="echo step {{ ti.task_id }}")',
    "python": 'PythonOperator(task_id=f"step_{i:05d}", python_callable=work, op_kwargs={"step": i})',
}


def render_class_dag(cls: DagClass, dag_id: str, version: int = 1) -> str:
    """The DAG file; a ``version`` above 1 adds a tag, so that parsing it makes a new DAG version."""
    # one doc section renders to ~80 bytes
    return _CLASS_TEMPLATE.format(
        name=cls.name, dag_id=dag_id, tasks=cls.tasks, operator=_OPERATORS[cls.operator],
        doc_sections=cls.doc_kib * 1024 // 80, params=cls.params, param_chars=cls.param_chars,
        deploy_tag=f", 'deploy-{version}'" if version > 1 else "",
    )


def write_class_dags(folder: Path | str, counts: dict[DagClass, int], version: int = 1) -> dict[str, DagClass]:
    """Write ``counts[cls]`` DAG files of each class (the first ones, at ``version``); return dag_id -> class."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    by_id = {}
    for cls, n in counts.items():
        for i in range(n):
            dag_id = f"w_{cls.name}_{i:03d}"
            _write_atomic(folder / f"{dag_id}.py", render_class_dag(cls, dag_id, version))
            by_id[dag_id] = cls
    return by_id


# -- the Airflow side -------------------------------------------------------------------------
def airflow_env(home: Path | str, **overrides: str) -> dict[str, str]:
    """Environment for an embedded Airflow home: SQLite, LocalExecutor, low parallelism.

    ``overrides`` are ``AIRFLOW__SECTION__KEY`` (or any) variables. Every ``AIRFLOW__*`` variable
    inherited from the caller is dropped so nothing outside leaks in."""
    home = Path(home)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            # a long busy timeout: on a loaded machine the dag-processor and the scheduler can hold
            # SQLite's lock for seconds, and the 5 s default makes the dag-processor exit
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}?timeout=120",
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "1",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "AIRFLOW__API_AUTH__JWT_SECRET": "bytecache-profiling-secret",
            "AIRFLOW__API__SECRET_KEY": "bytecache-profiling-secret",
        }
    )
    env.update(overrides)
    return env


def start_running_run(dag, run_id: str, session, *, now=None):
    """Create a manual run of the deserialized ``dag`` in the RUNNING state; return it."""
    from datetime import datetime, timezone

    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType

    now = now or datetime.now(timezone.utc)
    return dag.create_dagrun(
        run_id=run_id,
        logical_date=now,
        data_interval=(now, now),
        run_after=now,
        run_type=DagRunType.MANUAL,
        triggered_by=DagRunTriggeredByType.TEST,
        state=DagRunState.RUNNING,
        session=session,
    )


def parse_into_db(path: Path | str, bundle_path: Path | str, bundle_name: str = BUNDLE_NAME) -> list[str]:
    """Parse a DAG file or folder of bundle ``bundle_name`` and write its serialized DAGs, as the
    dag processor would; return the DAG ids. Raises on an import error."""
    from airflow.utils.session import create_session

    from bytecache_airflow.versions import current

    bag, sync_bag_to_db = current().parse_bundle(path, bundle_path, bundle_name)
    if bag.import_errors:
        raise RuntimeError(f"DAGs failed to import: {bag.import_errors}")
    with create_session() as session:
        sync_bag_to_db(bag, bundle_name, None, session=session)
    return list(bag.dags)


def prepare_db(folder: Path | str, spec: WorkloadSpec) -> dict:
    """Parse ``folder`` once, write the serialized DAGs, unpause, pool 0, create the runs.

    Runs inside an Airflow environment (``AIRFLOW_HOME`` etc. set before Airflow is imported)
    against a migrated DB. Returns counts."""
    plans = plan_dags(spec)
    counts = prepare_folder(folder, [plan.dag_id for plan in plans[: spec.runs]])
    return {"dags": len(plans), **counts}


def prepare_folder(folder: Path | str, run_dag_ids: list[str]) -> dict:
    """Parse ``folder`` once, write its serialized DAGs, unpause, pool 0, and create a running run
    (every task instance SCHEDULED) for each DAG in ``run_dag_ids``; return counts."""
    from datetime import datetime, timezone

    from sqlalchemy import func, select, update

    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.models.dag import DagModel
    from airflow.models.dag_version import DagVersion
    from airflow.models.pool import Pool
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.utils.session import create_session
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.state import TaskInstanceState

    folder = Path(folder)
    with create_session() as session:
        DagBundlesManager().sync_bundles_to_db(session=session)
    parse_into_db(folder, folder)
    runs = 0
    with create_session() as session:
        session.execute(update(DagModel).values(is_paused=False))
        Pool.create_or_update_pool("default_pool", slots=0, description="profiling: nothing runs", include_deferred=False, session=session)
        now = datetime.now(timezone.utc)
        for dag_id in run_dag_ids:
            start_running_run(SerializedDagModel.get(dag_id, session=session).dag, "profiling", session, now=now)
            runs += 1
        # Every task instance of those runs is put in SCHEDULED: with default_pool at 0 slots none
        # is ever queued, so the runs stay running, and the scheduler does not re-evaluate
        # thousands of waiting dependencies on every visit (a 2,000-task chain would otherwise
        # dominate each loop). The DAG structure -- what the cache holds -- is unchanged.
        session.execute(
            update(TaskInstance).where(TaskInstance.run_id == "profiling").values(state=TaskInstanceState.SCHEDULED)
        )
        versions = session.scalar(select(func.count()).select_from(DagVersion))
    return {"runs": runs, "versions": versions}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m profiling.workload", description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=("write", "prepare", "plan"))
    ap.add_argument("--dags-folder", type=Path)
    ap.add_argument("--spec", help="a WorkloadSpec as JSON (overrides the other options)")
    ap.add_argument("--dags", type=int, default=60)
    ap.add_argument("--size-mix", default=",".join(f"{k}:{v:g}" for k, v in QUICK_SIZE_MIX.items()))
    ap.add_argument("--active-runs", type=int)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    if args.spec:
        spec = WorkloadSpec.from_json(args.spec)
    else:
        spec = WorkloadSpec(n_dags=args.dags, size_mix=parse_size_mix(args.size_mix), active_runs=args.active_runs, seed=args.seed)
    if args.command == "plan":
        for p in plan_dags(spec):
            print(p.dag_id, p.tasks, p.shape)
        return 0
    if args.dags_folder is None:
        ap.error("--dags-folder is required")
    if args.command == "write":
        plans = write_dags(args.dags_folder, spec)
        print(json.dumps({"dags": len(plans), "tasks": sum(p.tasks for p in plans)}))
    else:
        print(json.dumps(prepare_db(args.dags_folder, spec)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
