"""The DAG weighing model on real serialized DAGs of a mix of classes (Airflow 3.3.2).

One bytes-per-JSON-byte ratio cannot fit small and large DAGs, BashOperator and PythonOperator,
and string-heavy DAGs at once; the model over (fixed cost, JSON bytes, tasks per operator type)
must, to within 10% per class, fitted on the same samples."""

from __future__ import annotations

import airflow_helpers as helpers
import pytest
from airflow.models.serialized_dag import SerializedDagModel
from airflow.utils.session import create_session

from bytecache.measure import Calibrator, walk_sizeof
from bytecache_airflow.weighing import coverage_keys, dag_calibrator, dag_features
from profiling.workload import WEIGHING_CLASSES, write_class_dags

MIX = ("bash_5", "python_50", "bash_500", "python_20_docs")


@pytest.fixture(scope="module")
def class_samples(airflow_db):
    """(class name, features, walker deep size) of one freshly deserialized DAG per class."""
    classes = {c.name: c for c in WEIGHING_CLASSES}
    by_id = write_class_dags(airflow_db["dags"], {classes[name]: 1 for name in MIX})
    for dag_id in by_id:
        helpers.parse_and_sync(airflow_db["dags"] / f"{dag_id}.py")
    samples = []
    with create_session() as session:
        for dag_id, cls in by_id.items():
            dag = SerializedDagModel.get(dag_id, session=session).dag
            json_length = helpers.serialized_row(helpers.latest_version_id(dag_id))[1]
            samples.append((cls.name, dag_features(dag, json_length), walk_sizeof(dag)))
    return samples


def per_class_errors(calibrator: Calibrator, samples) -> dict[str, float]:
    for _name, features, size in samples:
        calibrator.record(size, features)
    return {name: calibrator.weight(features) / size - 1 for name, features, size in samples}


def test_the_dag_model_weighs_every_class_within_ten_percent(class_samples):
    errors = per_class_errors(dag_calibrator(), class_samples)
    assert all(abs(e) <= 0.10 for e in errors.values()), errors


def test_one_json_ratio_on_the_same_samples_misses_a_class_by_more(class_samples):
    # the old model: JSON length x one ratio, fitted on the very same samples
    errors = per_class_errors(Calibrator(), class_samples)
    assert max(abs(e) for e in errors.values()) > 0.10, errors
    assert errors["python_20_docs"] > 0.25  # strings cost about their length, not several times it


def test_features_count_tasks_per_operator_type(class_samples):
    by_class = {name: features for name, features, _ in class_samples}
    assert by_class["bash_5"]["tasks:BashOperator"] == 5 and "tasks:PythonOperator" not in by_class["bash_5"]
    assert by_class["python_20_docs"]["tasks:PythonOperator"] == 20
    assert by_class["python_20_docs"]["bytes"] > 1_000_000 and by_class["bash_5"]["fixed"] == 1.0


def test_coverage_keys_are_operator_type_by_decade_of_tasks():
    features = {"fixed": 1.0, "bytes": 9e6, "tasks:BashOperator": 5.0, "tasks:PythonOperator": 2000.0, "tasks:X": 99.0}
    assert coverage_keys(features) == ["tasks:BashOperator@1", "tasks:PythonOperator@1000", "tasks:X@10"]
