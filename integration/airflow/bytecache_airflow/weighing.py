"""What a deserialized DAG weighs: the DAG-specific features of the cache's weighing model.

An entry is weighed by :class:`bytecache.measure.LinearFit` over features read from the DAG
after it is deserialized (cheap: one pass over its task dict, no deep walk):

* ``fixed`` = 1: the DAG object, its task group, timetable and the other per-DAG parts;
* ``bytes``: the length of its serialized JSON (the feature a plain
  :class:`~bytecache.measure.Calibrator` weighs by, so one of those still works as a ratio model). What JSON bytes cost in memory depends on
  what they encode -- a long string (``doc_md``, params, templates) costs about its length, the
  keys and small values of an operator several times that -- so this coefficient is mostly
  what strings cost, and the per-task features carry the rest;
* ``tasks:<task_type>``: the number of tasks of each operator type. Measured (stdlib walker,
  fresh DAGs, Airflow 3.3.2): ~3.4 kB per ``BashOperator`` and ~2.7 kB per ``PythonOperator``
  in all, at about the same JSON length per task, so one ratio per JSON byte cannot fit both.

* ``expanded_tasks``: the tasks the scheduler has asked for their mapped task-instance count
  (``DagRun.verify_integrity``, when a run is created or moves to this version). Airflow caches
  that answer per task with ``methodtools.lru_cache``, which materializes the task's ``__dict__``
  and stores a cache wire in it: ~1.0 kB more per task (stdlib walker; ~0.8 kB by pympler), +27%
  to +37% on a DAG of ``BashOperator``/``PythonOperator`` tasks. A DAG is deserialized without
  it; the bag's maintenance step notices the change and re-weighs the entry.

The coefficients start at the priors below (fitted to those measurements) and are refitted
from deep measurements of DAGs the scheduler has used (sampled by the bag: the first few on
their first hit, then one in ``every`` of those it evicts after a hit). A task type no sample
has shown yet is charged the generic per-task prior.
"""

from __future__ import annotations

import functools
import gc
from collections import Counter
from typing import Any

from bytecache.measure import Calibrator, LinearFit, walk_sizeof

__all__ = ["dag_features", "expanded_tasks", "first_task_expanded", "EXPANDED_FEATURE", "coverage_keys", "DAG_PRIOR", "OPERATOR_PRIORS", "TASK_PRIOR", "dag_weighing_model", "dag_calibrator", "task_type_of"]

#: Prior coefficients (bytes per unit of each feature): a least-squares fit to the stdlib walker
#: on fresh DAGs of the classes in ``profiling.workload.WEIGHING_CLASSES`` (Airflow 3.3.2), which
#: it matches within 0.2% per class (pympler: -8% for the string-heavy class, within 2% for the
#: rest); ``fixed`` less the ~1.4 kB per DAG of process-wide objects (``DEFAULT_OPERATOR_DEPS``,
#: the ``UTC`` timezone) the walker no longer charges each DAG for.
DAG_PRIOR = {"fixed": 4_800.0, "bytes": 1.58, "expanded_tasks": 1_010.0}
#: Prior bytes per task of the common operator types (besides their JSON's share), and of any
#: other type no sample has shown yet.
OPERATOR_PRIORS = {"BashOperator": 2_600.0, "PythonOperator": 1_870.0}
TASK_PRIOR = 2_200.0
TASK_FEATURE = "tasks:"
EXPANDED_FEATURE = "expanded_tasks"
#: The task method whose per-instance cache (a ``methodtools.lru_cache``) is the growth.
_EXPANDING_METHOD = "get_parse_time_mapped_ti_count"


def task_type_of(task: Any) -> str:
    return getattr(task, "task_type", None) or type(task).__name__


@functools.cache
def _wire_key(cls: type) -> str | None:
    """The ``__dict__`` key under which ``wirerope`` keeps an instance's cache of the expanding
    method (``"__wire|<class>|<method>"``), or None if ``cls`` does not cache it that way."""
    for klass in cls.__mro__:
        descriptor = vars(klass).get(_EXPANDING_METHOD)
        if descriptor is not None:
            return getattr(descriptor, "wire_name", None)
    return None


def _expanded(task: Any) -> bool:
    key = _wire_key(type(task))
    # Read through gc.get_referents, not task.__dict__: on CPython 3.11+ asking for __dict__
    # materializes it -- the very growth this detects. An instance whose dict was never
    # materialized lists its attribute values instead, none of them a dict with the wire key.
    return key is not None and any(type(r) is dict and key in r for r in gc.get_referents(task))


def expanded_tasks(dag: Any) -> int:
    """How many of ``dag``'s tasks carry Airflow's per-task cache of their mapped count (see the
    module's ``expanded_tasks`` feature). One pass over the tasks: ~2 us per task."""
    task_dict = getattr(dag, "task_dict", None) or {}
    return sum(1 for task in task_dict.values() if _expanded(task))


def first_task_expanded(dag: Any) -> bool:
    """Whether the first task carries it: ``verify_integrity`` visits every task of a run at once,
    so this is the cheap check of whether ``expanded_tasks`` is worth counting."""
    task_dict = getattr(dag, "task_dict", None) or {}
    return bool(task_dict) and _expanded(next(iter(task_dict.values())))


def dag_features(dag: Any, json_bytes: int, *, expanded: int | None = None) -> dict[str, float]:
    """The weighing features of a deserialized DAG whose serialized JSON is ``json_bytes`` long;
    ``expanded``: its ``expanded_tasks`` if known (0 for a DAG just deserialized), else counted."""
    features: dict[str, float] = {"fixed": 1.0, "bytes": float(json_bytes)}
    task_dict = getattr(dag, "task_dict", None) or {}
    for kind, count in Counter(task_type_of(t) for t in task_dict.values()).items():
        features[TASK_FEATURE + kind] = float(count)
    if expanded is None:
        expanded = expanded_tasks(dag)
    if expanded:
        features[EXPANDED_FEATURE] = float(expanded)
    return features


def _prior_for(name: str) -> float:
    if not name.startswith(TASK_FEATURE):
        return 0.0
    return OPERATOR_PRIORS.get(name[len(TASK_FEATURE):], TASK_PRIOR)


def coverage_keys(features: dict[str, float]) -> list[str]:
    """Kinds of DAG the calibrator should have seen a few samples of: each operator type per
    decade of task count (a fixed cost and a per-task cost are told apart only by samples of
    several sizes)."""
    return [
        f"{name}@{10 ** (len(str(int(count))) - 1)}"
        for name, count in features.items()
        if name.startswith(TASK_FEATURE) and count >= 1
    ]


def dag_weighing_model() -> LinearFit:
    return LinearFit(DAG_PRIOR, prior_for=_prior_for)


def dag_calibrator(**kwargs: Any) -> Calibrator:
    """The bag's default calibrator: the DAG model, measured with the stdlib walker (pympler's
    import -- numpy -- and its scratch memory while it walks a 2,000-task DAG would land in the
    very RSS the budget bounds), at most ``max_time_share`` (0.5%) of the time after a warm-up
    of three samples; a DAG of a kind (operator type and decade of task count, see
    :func:`coverage_keys`) fewer than two samples have shown is sampled when it leaves the cache,
    the others one in ``every``."""
    kwargs.setdefault("model", dag_weighing_model())
    kwargs.setdefault("measure", walk_sizeof)
    kwargs.setdefault("warmup", 3)
    kwargs.setdefault("max_time_share", 0.005)
    kwargs.setdefault("min_feature_samples", 2)
    return Calibrator(**kwargs)
