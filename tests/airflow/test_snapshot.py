"""``ByteBoundedDagBag.snapshot()``: the bag's state as plain, JSON-able values."""

from __future__ import annotations

import json

import airflow_helpers as helpers
from airflow.utils.session import create_session

from bytecache_airflow.dagbag import BagSnapshot, ByteBoundedDagBag


def test_snapshot_lists_what_is_cached_and_adds_up(airflow_db):
    bag = ByteBoundedDagBag(False, max_bytes="64MiB", stats_prefix="test.dag_bag", timer=helpers.FakeClock(), background=False)
    with create_session() as session:
        runs = [helpers.get_run(session, airflow_db["dags_by_size"][n]) for n in (10, 100)]
        for run in runs + runs:
            bag.get_dag_for_run(run, session=session)
    bag.maintain()  # measures the DAGs queued as warm-up samples on their first hit
    snap = bag.snapshot()
    assert isinstance(snap, BagSnapshot)
    assert snap.max_bytes == 64 * 1024**2
    assert sorted(e.dag_id for e in snap.entries) == sorted(r.dag_id for r in runs)
    assert snap.cached_bytes == sum(e.weight for e in snap.entries) == bag.currsize > 0
    for entry in snap.entries:
        version_id = helpers.latest_version_id(entry.dag_id)
        assert entry.dag_version_id == str(version_id)
        assert entry.weight == bag.cache.weight_of(version_id)
        assert entry.json_bytes == serialized_length(version_id)
    assert (snap.hits, snap.misses, snap.loads, snap.rejections, snap.evictions) == (2, 2, 2, 0, 0)
    assert snap.weighing["samples"] == 2 and snap.weighing["coefficients"]["fixed"] > 0
    assert snap.reclaim["collections"] == 0 and snap.reclaim["pauses_ms"] == []
    for key in ("collection_seconds", "trims", "trim_seconds", "calibration_seconds", "maintenance_seconds"):
        assert key in snap.reclaim
    assert snap.reclaim["calibration_seconds"] > 0  # the CPU time of the deep measurement
    again = json.loads(json.dumps(snap.to_dict()))
    assert again["cached_bytes"] == snap.cached_bytes and len(again["entries"]) == 2


def serialized_length(version_id) -> int:
    _hash, length, _compressed = helpers.serialized_row(version_id)
    return length
