"""The misses-per-loop measurement, small: a real scheduler loop over 30 DAGs, each configuration
in its own subprocess, Airflow's LRU cut to 20 entries so the cyclic sweep thrashes it."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PER_LOOP = 10
# Airflow's version without importing Airflow here (that would write ~/airflow/airflow.cfg).
AIRFLOW = tuple(int(x) for x in version("apache-airflow-core").split(".")[:2])


def test_lru_thrashes_where_the_byte_bounded_bag_keeps_what_fits(tmp_path):
    out = tmp_path / "misses.json"
    # before 3.3 Airflow's cache is an unbounded dict: no entry cap to cut
    lru_entries = ["--lru-entries", "20"] if AIRFLOW >= (3, 3) else []
    cmd = [sys.executable, "-m", "profiling.scheduler_misses", "--dags", "30", "--per-loop", str(PER_LOOP), "--sweeps", "3",
           *lru_entries, "--only", "airflow-lru", "bytecache-tinylfu", "bytecache-tinylfu-fits", "--json", str(out),
           "--trace-dir", str(tmp_path / "traces")]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    results = {x["label"]: x for x in json.loads(out.read_text())}
    lru, tight, fits = results["airflow-lru"], results["bytecache-tinylfu"], results["bytecache-tinylfu-fits"]
    for res in results.values():
        assert res["loops"] == 9 and res["steady_loops"] == 3 and res["lookups"] > 0
    if AIRFLOW >= (3, 3):  # 30 runs swept cyclically through 20 LRU entries: every examined run misses
        assert lru["misses_per_loop"] >= 0.8 * PER_LOOP and lru["entries"] <= 20
        assert "LRU, 20 entries" in r.stdout
    else:  # the unbounded dict keeps every DAG it loaded
        assert lru["misses_per_loop"] == 0 and lru["entries"] == 30
        assert "unbounded dict" in r.stdout
    # the whole working set fits the budget: no misses in steady state
    assert fits["misses_per_loop"] == 0 and fits["entries"] == 30
    # at 60% of the working set the byte-bounded bag keeps part of the sweep, within its budget
    if AIRFLOW >= (3, 3):
        assert tight["misses_per_loop"] < lru["misses_per_loop"]
    assert 0 < tight["accounted"] <= tight["budget"] and tight["entries"] < 30
    # the working-set gauge of each traced bytecache run, against the truth from its own trace
    assert sorted(p.name for p in (tmp_path / "traces").iterdir()) == ["bytecache-tinylfu-fits.trace.gz", "bytecache-tinylfu.trace.gz"]
    assert lru["gauge_accuracy"] is None
    for res in (tight, fits):
        acc = res["gauge_accuracy"]
        assert acc["samples"] == 3 and acc["truth_median"] > 0.5 * res["working_set"]
        assert abs(acc["error_median"]) <= 0.10, acc
    assert "working-set gauge against the truth from the trace" in r.stdout
    assert "misses/loop" in r.stdout and f"Airflow {version('apache-airflow-core')}" in r.stdout
