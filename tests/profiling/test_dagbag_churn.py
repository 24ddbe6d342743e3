"""A small instance of the in-process DAG-bag churn harness, against a real SQLite metadata DB.

It runs in subprocesses (each variant in its own, under memray.Tracker), so this test module
never imports Airflow and cannot disturb the Airflow environment of other test packages.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MB = 1024 * 1024


def test_small_churn(tmp_path):
    out = tmp_path / "churn"
    r = subprocess.run(
        [sys.executable, "-m", "profiling.dagbag_churn", "--small", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    results = {x["variant"]: x for x in json.loads((out / "churn.json").read_text())}
    assert set(results) == {"dbdagbag", "bytecache"}
    plain, ours = results["dbdagbag"], results["bytecache"]
    budget = ours["budget"]
    for res in results.values():
        assert res["versions"] >= 80  # every step made a new dag_version
        assert res["misses"] >= res["versions"]  # each new version is read (missed) at least once
        assert res["series"] and res["heap_series"]
    # The plain bag keeps every version it ever read: its retained heap grows with the versions.
    assert plain["entries"] >= 0.5 * plain["versions"]
    assert plain["retained_under_load_path"] > 2 * budget
    # Ours stays within its budget and its gauge matches what memray attributes to the cache.
    assert ours["gauge"] <= budget
    assert ours["retained_under_load_path"] <= 1.25 * budget + 1 * MB
    err = ours["gauge"] / ours["retained_under_load_path"] - 1
    assert abs(err) <= 0.25, f"bytes gauge accounting error {err:+.1%}"
    assert ours["hits"] > 0
    summary = (out / "summary.md").read_text()
    assert "accounting error" in summary and "| bytecache |" in summary
    assert (out / "churn.csv").exists()
