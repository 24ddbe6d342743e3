"""The workload generator is deterministic and writes DAG files that differ only where intended."""

from __future__ import annotations

import ast

import pytest

from profiling.workload import (
    DEFAULT_SIZE_MIX,
    SHAPES,
    Redeployer,
    WorkloadSpec,
    parse_size_mix,
    plan_dags,
    redeploy_batches,
    render_dag,
    write_dags,
)


def _folder_contents(folder):
    return {p.name: p.read_text() for p in sorted(folder.iterdir()) if p.suffix == ".py"}


def test_same_seed_same_files(tmp_path):
    spec = WorkloadSpec(n_dags=30, size_mix=dict(DEFAULT_SIZE_MIX), seed=7)
    write_dags(tmp_path / "a", spec)
    write_dags(tmp_path / "b", spec)
    a, b = _folder_contents(tmp_path / "a"), _folder_contents(tmp_path / "b")
    assert len(a) == 30
    assert a == b


def test_different_seed_different_plan():
    a = plan_dags(WorkloadSpec(n_dags=40, seed=1))
    b = plan_dags(WorkloadSpec(n_dags=40, seed=2))
    assert [(p.tasks, p.shape) for p in a] != [(p.tasks, p.shape) for p in b]


def test_plan_follows_size_mix_and_uses_every_shape():
    spec = WorkloadSpec(n_dags=400, size_mix={10: 3, 2000: 1}, seed=3)
    plans = plan_dags(spec)
    sizes = [p.tasks for p in plans]
    assert set(sizes) == {10, 2000}
    assert 0.15 < sizes.count(2000) / len(sizes) < 0.35
    assert {p.shape for p in plans} == set(SHAPES)
    assert len({p.dag_id for p in plans}) == 400


@pytest.mark.parametrize("shape", SHAPES)
def test_rendered_dag_is_python_with_a_real_operator(shape):
    plan = next(p for p in plan_dags(WorkloadSpec(n_dags=60, seed=1)) if p.shape == shape)
    text = render_dag(plan, version=3, seed=1)
    ast.parse(text)
    assert "BashOperator" in text and "EmptyOperator" not in text
    assert f'dag_id="{plan.dag_id}"' in text
    assert "VERSION = 3" in text


def test_redeployer_is_deterministic_and_only_bumps_versions(tmp_path):
    spec = WorkloadSpec(n_dags=20, redeploy_fraction=0.25, seed=5)
    runs = []
    for name in ("x", "y"):
        folder = tmp_path / name
        plans = write_dags(folder, spec)
        before = _folder_contents(folder)
        r = Redeployer(folder, spec, plans)
        for tick in range(1, 4):
            r.tick(tick)
        after = _folder_contents(folder)
        changed = sorted(k for k in before if before[k] != after[k])
        for k in changed:  # only the version line differs
            diff = [(x, y) for x, y in zip(before[k].splitlines(), after[k].splitlines()) if x != y]
            assert len(diff) == 1 and diff[0][0].startswith("VERSION = 1") and diff[0][1].startswith("VERSION = ")
        runs.append((changed, after, r.rewrites, [e.dags for e in r.events]))
    assert runs[0] == runs[1]
    assert runs[0][2] == 3 * spec.per_tick() == 15
    batches = redeploy_batches(spec, 3)
    touched = sorted({plan_dags(spec)[i].filename for batch in batches for i in batch})
    assert touched == runs[0][0]


def test_spec_json_round_trip_and_size_mix_parsing():
    spec = WorkloadSpec(n_dags=9, size_mix=parse_size_mix("10:2, 500:1"), active_runs=4, seed=11)
    assert WorkloadSpec.from_json(spec.to_json()) == spec
    assert spec.runs == 4
    with pytest.raises(ValueError):
        parse_size_mix("0:1")
    with pytest.raises(ValueError):
        parse_size_mix("")
