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
  fresh DAGs, Airflow 3.3.2): ~3.3 kB per ``BashOperator`` and ~2.6 kB per ``PythonOperator``
  at about the same JSON length per task, so one ratio per JSON byte cannot fit both.

The coefficients start at the priors below (fitted to those measurements) and are refitted
from deep measurements of DAGs the scheduler has used (sampled by the bag: the first few on
their first hit, then one in ``every`` of those it evicts after a hit). A task type no sample
has shown yet is charged the generic per-task prior.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from bytecache.measure import Calibrator, LinearFit, walk_sizeof

__all__ = ["dag_features", "coverage_keys", "DAG_PRIOR", "OPERATOR_PRIORS", "TASK_PRIOR", "dag_weighing_model", "dag_calibrator", "task_type_of"]

#: Prior coefficients (bytes per unit of each feature), from fits on fresh DAGs of the classes in
#: ``profiling.workload.WEIGHING_CLASSES``.
DAG_PRIOR = {"fixed": 8_000.0, "bytes": 1.4}
#: Prior bytes per task of the common operator types (besides their JSON's share), and of any
#: other type no sample has shown yet.
OPERATOR_PRIORS = {"BashOperator": 2_700.0, "PythonOperator": 2_000.0, "EmptyOperator": 2_700.0}
TASK_PRIOR = 2_400.0
TASK_FEATURE = "tasks:"


def task_type_of(task: Any) -> str:
    return getattr(task, "task_type", None) or type(task).__name__


def dag_features(dag: Any, json_bytes: int) -> dict[str, float]:
    """The weighing features of a deserialized DAG whose serialized JSON is ``json_bytes`` long."""
    features: dict[str, float] = {"fixed": 1.0, "bytes": float(json_bytes)}
    task_dict = getattr(dag, "task_dict", None) or {}
    for kind, count in Counter(task_type_of(t) for t in task_dict.values()).items():
        features[TASK_FEATURE + kind] = float(count)
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
