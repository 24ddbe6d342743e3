"""The sizing command against a real metadata DB: which versions, what they weigh, what to set."""

from __future__ import annotations

import subprocess
import sys

import airflow_helpers as helpers

from airflow.utils.session import create_session

from bytecache_airflow.dagbag import ByteBoundedDagBag
from bytecache_airflow.sizing import MIB, UNCOLLECTED_MARGIN, needed_versions, size_deployment


def test_needs_the_versions_of_running_runs_and_weighs_them_as_the_cache_does(airflow_db):
    with create_session() as session:
        report = size_deployment(session, headroom=0.1, measure=0)
        by_dag = {v.dag_id: v for v in report.versions}
        # every fixture DAG has a running run and is unpaused: each needed once, heaviest first
        # (other tests add DAGs of their own to the session's DB)
        fixture = set(airflow_db["dags_by_size"].values()) | {"tiny"}
        assert fixture <= set(by_dag) and len(by_dag) == len(report.versions)
        assert [v.weight for v in report.versions] == sorted((v.weight for v in report.versions), reverse=True)
        assert {by_dag[d].tasks for d in fixture} == {3, 10, 100, 1000}
        # the same weight a byte-bounded bag charges for the same version, before it samples any
        bag = ByteBoundedDagBag(False, max_bytes=None, background=False, stats_prefix="test.sizing")
        for dag_id in fixture:
            version = by_dag[dag_id]
            run = helpers.get_run(session, dag_id)
            bag.get_dag_for_run(run, session=session)
            key = helpers.latest_version_id(dag_id)
            assert str(key) == version.dag_version_id
            assert bag.cache.weight_of(key) == version.weight, dag_id
            assert version.json_bytes == helpers.serialized_row(key)[1]
    assert report.total_weight == sum(v.weight for v in report.versions)
    assert report.recommended_max_bytes % MIB == 0
    assert report.total_weight * 1.1 <= report.recommended_max_bytes < report.total_weight * 1.1 + MIB or (
        report.recommended_max_bytes == 16 * MIB and report.total_weight * 1.1 < 16 * MIB
    )
    assert report.plan_memory_bytes == int(report.recommended_max_bytes * (1 + UNCOLLECTED_MARGIN))


def test_a_paused_dag_without_runs_and_a_superseded_version_are_not_needed(airflow_db, db_copy):
    env = db_copy["env"]
    script = (
        "from airflow.utils.session import create_session\n"
        "from bytecache_airflow.sizing import needed_versions\n"
        "with create_session() as s:\n"
        "    print(sorted({str(k) for k in needed_versions(s)}))\n"
    )
    import sqlite3

    with sqlite3.connect(str(db_copy["db"])) as conn:
        # 'tiny' loses its run and is paused; nothing else about it is needed
        conn.execute("DELETE FROM task_instance WHERE dag_id = 'tiny'")
        conn.execute("DELETE FROM dag_run WHERE dag_id = 'tiny'")
        conn.execute("UPDATE dag SET is_paused = 1 WHERE dag_id = 'tiny'")
        versions = dict(conn.execute("SELECT dag_id, id FROM dag_version").fetchall())
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    needed = eval(proc.stdout.strip().splitlines()[-1])
    with sqlite3.connect(str(db_copy["db"])) as conn:
        others = {str(r[0]).replace("-", "") for r in conn.execute(
            "SELECT id FROM dag_version WHERE dag_id IN (SELECT dag_id FROM dag WHERE is_paused = 0) AND dag_id != 'tiny'")}
    needed = {v.replace("-", "") for v in needed}
    assert versions["tiny"].replace("-", "") not in needed
    assert needed <= others and len(needed) >= 3  # one version per remaining unpaused DAG at most


def test_the_command_prints_the_recommendation_and_refuses_a_bad_option(airflow_db):
    proc = subprocess.run([sys.executable, "-m", "bytecache_airflow.sizing", "--top", "2", "--measure", "2"],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    with create_session() as session:
        expected = len(needed_versions(session))
    assert f"DAG versions the scheduler needs now: {expected} " in out, out
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith(("| DAG ", "| **total**"))]
    assert len(rows) == 2, out  # --top 2, whatever other test modules left in the shared DB
    assert "Recommended: [scheduler] dag_cache_max_bytes = " in out and "MiB" in out
    bad = subprocess.run([sys.executable, "-m", "bytecache_airflow.sizing", "--headroom", "-1"],
                         capture_output=True, text=True, timeout=180)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == "bytecache sizing: --headroom must be between 0 and 10 (a fraction of the total), got -1.0"


def test_with_a_trace_it_prints_and_plots_the_miss_ratio_curve(airflow_db, tmp_path):
    from test_trace import OLD, REAL

    plot = tmp_path / "curve.png"
    proc = subprocess.run([sys.executable, "-m", "bytecache_airflow.sizing", "--measure", "0", "--trace", str(REAL),
                           "--plot", str(plot)], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    # the DB's recommendation first, then the trace's curve
    assert out.index("Recommended: [scheduler] dag_cache_max_bytes") < out.index("Miss-ratio curve: ")
    for entries in (128, 256, 512, 1024):
        assert f"| Airflow LRU, {entries} entries | " in out
    assert "| bytecache (default policy), budget 60% of the working set | " in out
    assert f"Plot: {plot}" in out and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # without the DB; and a trace without times is refused, by name, before the DB is read
    only = subprocess.run([sys.executable, "-m", "bytecache_airflow.sizing", "--trace", str(REAL), "--trace-only", "--no-plot"],
                          capture_output=True, text=True, timeout=180)
    assert only.returncode == 0 and "Recommended" not in only.stdout and "Miss-ratio curve" in only.stdout
    old = subprocess.run([sys.executable, "-m", "bytecache_airflow.sizing", "--trace", str(OLD), "--no-plot"],
                         capture_output=True, text=True, timeout=180)
    assert old.returncode == 2 and old.stdout == ""
    assert old.stderr.strip().splitlines()[-1].startswith("bytecache sizing: the trace has no times and loop numbers")
