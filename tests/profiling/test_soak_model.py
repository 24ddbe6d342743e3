"""The soak's records: results.json round trip, the reused reference's spec check, and a
report that re-renders byte for byte from the saved file."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from profiling.soak import report
from profiling.soak.cli import main as soak_main
from profiling.soak.model import RunRecord, Sample, SoakResults, SoakSpec, reused_reference
from profiling.units import MiB
from profiling.workload import WorkloadSpec


def results() -> SoakResults:
    spec = SoakSpec(workload=WorkloadSpec(n_dags=8, seed=3), configs=("reference", "bytecache"),
                    durations={"reference": 200.0, "bytecache": 200.0})
    runs = []
    for name, level in (("reference", 200), ("bytecache", 220)):
        samples = [Sample(float(t), (level + (t % 7)) * MiB, 150 * MiB, 120 * MiB, 2.5) for t in range(200)]
        rec = RunRecord(name, budget=32 * MiB if name == "bytecache" else None, duration=200.0, warmup=90.0, samples=samples,
                        redeploys=[5.0, 10.0], versions_start=8, versions_end=40,
                        scheduler={"hits": 30, "misses": 10, "loops": 4, "first_loop": {"rss": 180 * MiB}})
        if name == "bytecache":
            rec.scheduler.update({"entries": 3, "snapshot": {"cached_bytes": 21 * MiB, "weighing": {"ratio": 7.1}, "reclaim": {}},
                                  "deep": {"walk_bytes": 20 * MiB, "pympler_bytes": 22 * MiB},
                                  "release": {"gauge": 21 * MiB, "walk_bytes": 20 * MiB, "heap_released": 20 * MiB,
                                              "pss_released": 14 * MiB, "rss_released": 15 * MiB, "survivors": []}})
        runs.append(rec)
    return SoakResults(spec, 32 * MiB, {"dags": 8, "tasks": 100, "json_bytes": 5 * MiB, "active_bytes_estimate": 30 * MiB},
                       runs, command="python -m profiling.soak run --quick", started="2026-11-29 05:00:00 UTC")


def test_results_round_trip(tmp_path):
    res = results()
    res.save(tmp_path)
    back = SoakResults.load(tmp_path)
    assert back == res
    assert json.loads((tmp_path / "results.json").read_text())["spec"]["workload"]["n_dags"] == 8
    (tmp_path / "results.json").write_text(json.dumps({**res.to_dict(), "format": 99}))
    with pytest.raises(ValueError, match="format 99"):
        SoakResults.load(tmp_path)


def test_report_rerenders_identically(tmp_path, capsys):
    res = results()
    res.save(tmp_path)
    summary = report.write_all(res, tmp_path)
    assert summary.main.outcome == "flat"
    first = {name: (tmp_path / name).read_bytes() for name in ("summary.md", "rss.csv", "redeploys.csv", "rss.png")}
    assert "accounting error: gauge vs deep walk | n/a | +5.0% |" in first["summary.md"].decode()
    assert " allocator bytes in use freed, MiB (gauge vs freed) | n/a | 21.0 / 20.0 / 20.0 (+5.0%) |" in first["summary.md"].decode()
    assert "(gauge vs PSS) | n/a | 14.0 / 15.0 (+50.0%) |" in first["summary.md"].decode()
    assert soak_main(["report", str(tmp_path)]) == 0  # 0: flat
    assert {name: (tmp_path / name).read_bytes() for name in first} == first
    out = capsys.readouterr().out
    assert "soak: verdict flat; plot" in out and str(tmp_path / "rss.png") in out
    assert first["summary.md"].decode().strip().splitlines()[-1].startswith("Verdict bytecache: flat (")


def test_reused_reference_needs_the_same_workload():
    earlier = results()
    spec = replace(earlier.spec, durations={"bytecache": 1800.0}, configs=("reference", "bytecache"))
    ref = reused_reference(earlier, spec, "reports/x")
    assert ref.name == "reference" and ref.source == "reports/x" and ref.samples == earlier.run("reference").samples
    other = replace(spec, workload=replace(spec.workload, seed=4))
    with pytest.raises(ValueError, match="another workload.*seed"):
        reused_reference(earlier, other, "reports/x")
    earlier.runs = [r for r in earlier.runs if r.name != "reference"]
    with pytest.raises(ValueError, match="no reference run"):
        reused_reference(earlier, spec, "reports/x")


def test_the_airflow_version_is_part_of_the_spec(tmp_path):
    earlier = results()
    earlier.spec = replace(earlier.spec, airflow="3.3.2")
    other_release = replace(earlier.spec, airflow="3.2.2")
    with pytest.raises(ValueError, match=r"another workload.*'airflow': \('3.3.2', '3.2.2'\)"):
        reused_reference(earlier, other_release, "reports/x")
    earlier.save(tmp_path)
    assert SoakResults.load(tmp_path).spec.airflow == "3.3.2"
    report.write_all(earlier, tmp_path)
    assert "\nAirflow 3.3.2.\n" in (tmp_path / "summary.md").read_text()


def test_before_33_there_is_no_unbounded_run_and_a_reference_only_where_the_bag_takes_a_cap():
    pre33 = dict(workload=WorkloadSpec(n_dags=8), durations={}, airflow="3.2.2", airflow_cache_size=0)
    spec = SoakSpec(configs=("stock", "bytecache"), **pre33)
    assert spec.label("stock") == "(b) stock Airflow 3.2.2 (unbounded DAG dict)"
    with pytest.raises(ValueError, match="--configs: unbounded sets Airflow 3.3's SCHEDULER_DAG_CACHE_SIZE; Airflow 3.2.2 has none"):
        SoakSpec(configs=("unbounded", "bytecache"), **pre33)
    # 3.2's DBDagBag takes cache_size: its reference run is a 1-entry LRU
    assert SoakSpec(configs=("reference", "bytecache"), airflow_entry_cap=True, **pre33).configs == ("reference", "bytecache")
    on31 = dict(pre33, airflow="3.1.8")
    with pytest.raises(ValueError, match="--configs: reference caps the scheduler's bag at 1 entry .*Airflow 3.1.8 has neither"):
        SoakSpec(configs=("reference", "bytecache"), airflow_entry_cap=False, **on31)
    on33 = SoakSpec(workload=WorkloadSpec(n_dags=8), configs=("stock",), durations={}, airflow="3.3.2", airflow_cache_size=512)
    assert on33.label("stock") == "(b) stock Airflow 3.3.2 (512-entry LRU)"


def test_summary_shows_speed_cost_pauses_and_peaks_side_by_side(tmp_path):
    res = results()
    ref, ours = res.runs
    ref.loop_ms, ours.loop_ms = [4000.0, 6000.0, 5000.0], [3000.0, 2000.0, 4000.0]
    for run in res.runs:
        run.scheduler.update({"uptime_s": 200.0, "gc_full": 40, "gc_full_ms": 30000.0})
    ours.scheduler["snapshot"]["reclaim"] = {
        "collections": 2, "collection_seconds": 1.2, "pauses_ms": [500.0, 700.0], "trim_seconds": 0.1,
        "calibration_seconds": 0.5, "maintenance_seconds": 0.2, "overhead_seconds": 2.0, "deferred_for_time": 3,
        "held_peak_bytes": 40 * MiB, "held_peak_budget": 32 * MiB,
        "held_ticks_by_ratio": {"1.0": 150, "1.1": 30, "1.25": 10, "1.5": 10, "2.0": 0, "inf": 0}}
    res.save(tmp_path)
    report.write_all(res, tmp_path)
    text = (tmp_path / "summary.md").read_text()
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}

    def cells(label_start):
        line = next(v for k, v in rows.items() if k.startswith(label_start))
        return [c.strip() for c in line.strip("| ").split(" | ")[1:]]

    assert cells("loop duration mean / p50 ÷ the reference's") == ["n/a", "0.60 / 0.60"]
    assert cells("the cache's own overhead") == ["n/a", "2.0 of 200; 1.00%"]
    assert cells("its collections") == ["n/a", "2; 1.2; 0.60%; 3"]
    assert cells("its collection pauses") == ["n/a", "600 / 698 / 700"]
    assert cells("all full collections") == ["40; 750; 15.0%", "40; 750; 15.0%"]
    assert cells("peak RSS − the reference's peak") == ["n/a", "20.0 / 20.0 vs 40.0"]
    assert cells("live + uncollected") == ["n/a", "1.25; 5.0%"]
    assert soak_main(["report", str(tmp_path)]) == 0 and (tmp_path / "summary.md").read_text() == text
