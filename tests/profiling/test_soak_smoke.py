"""The main job end to end, small: a real dag-processor and scheduler per configuration.

A smoke run of ``profiling/scheduler_soak.py`` (about two minutes): 8 small DAGs, the reference
and the bytecache configurations for 40 s each, memray on. Too short to judge flatness (that is
the quick soak's job, see the README); it checks that every part of the report is produced from
a real run and that the bytecache run really ran our bag under its budget.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUDGET = 2 * 1024 * 1024


# Airflow's version without importing Airflow here (that would write ~/airflow/airflow.cfg).
AIRFLOW = tuple(int(x) for x in version("apache-airflow-core").split(".")[:2])


def test_soak_end_to_end(tmp_path):
    # Beside bytecache, Airflow's own cache: 3.3's with one entry (the reference), or before 3.3
    # the stock one, an unbounded dict (3.3's entry cap does not exist there).
    theirs, their_class = ("reference", "CachedDBDagBag") if AIRFLOW >= (3, 3) else ("stock", "DBDagBag")
    out = tmp_path / "soak"
    cmd = [
        sys.executable, "profiling/scheduler_soak.py", "--quick", "--minutes", "0.67",
        "--configs", f"{theirs},bytecache", "--dags", "8", "--size-mix", "10:1,50:1,200:1",
        "--redeploy-fraction", "0.5", "--redeploy-interval", "3", "--budget", "2MiB", "--out", str(out),
    ]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    # 0 flat, 1 not flat: either is a finished report; 2 (error) or a crash is not.
    assert r.returncode in (0, 1), r.stdout[-4000:] + r.stderr[-4000:]
    summary = (out / "summary.md").read_text()
    verdict = summary.strip().splitlines()[-1]
    assert verdict.startswith("RSS flat: ") and ("yes" in verdict.split("(")[0]) == (r.returncode == 0)
    assert f"soak: plot {out / 'rss.png'}" in r.stdout and (out / "rss.png").stat().st_size > 10_000

    with open(out / "rss.csv") as f:
        rows = list(csv.DictReader(f))
    for config in (theirs, "bytecache"):
        samples = [row for row in rows if row["config"] == config]
        assert len(samples) >= 30 and all(int(row["rss_bytes"]) > 50 * 1024 * 1024 for row in samples[5:])

    metrics = json.loads((out / "metrics.json").read_text())
    ours = metrics["bytecache"]
    report = json.loads((out / "bytecache" / "scheduler-report.json").read_text())
    assert report["bag_class"] == "bytecache_airflow.dagbag.ByteBoundedDagBag"
    their_report = json.loads((out / theirs / "scheduler-report.json").read_text())
    assert their_report["bag_class"] == f"airflow.models.dagbag.{their_class}"
    assert their_report["misses"] > 0 and their_report["lookups"] >= their_report["hits"] + their_report["misses"]
    assert ours["versions"] > 0 and ours["misses"] > 0 and ours["loops"] >= 2
    assert 0 < ours["gauge"] <= BUDGET  # the cache bytes gauge arrived at the statsd listener
    assert ours["deep"] > 0  # the deep size saw the cache
    detail = report["deep_detail"]  # per cached entry: the gauge is exactly the sum of the weights
    assert len(detail) == report["deep_entries"] == report["gauges"]["cache_size"] > 0
    assert sum(d["weight"] for d in detail) == report["gauges"]["cache_bytes"]
    assert (out / "bytecache" / "scheduler.log").stat().st_size > 0
    if AIRFLOW >= (3, 2):  # Airflow's [profiling] memray_trace_components came with 3.2
        assert ours["memray_cache"] > 0  # memray saw the cache too
        for name in ("memray-flamegraph.html", "memray-stats.txt", "memray-summary.txt"):
            assert (out / "bytecache" / name).stat().st_size > 0, name
    else:
        assert ours["memray_cache"] is None and not (out / "bytecache" / "memray-stats.txt").exists()
    assert (out / "bytecache" / "scheduler-trace.txt.gz").exists()
