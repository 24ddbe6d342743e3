"""Replay of the shipped scheduler access trace through the core benchmark's policies."""

from __future__ import annotations

from pathlib import Path

import pytest

from profiling.replay_trace import load_trace, main, replay_table, working_set

TRACE = Path(__file__).resolve().parents[2] / "profiling" / "traces" / "quick-soak.trace.gz"


@pytest.fixture(scope="module")
def trace():
    assert TRACE.exists(), f"shipped trace missing: {TRACE}"
    return load_trace(TRACE)


def test_shipped_trace_is_a_real_scheduler_trace(trace):
    assert len(trace) >= 200
    keys = {k for k, _ in trace}
    assert 20 <= len(keys) < len(trace)  # versions are revisited
    assert all(len(k) == 32 and int(k, 16) >= 0 for k in keys)  # dag_version_id (UUID hex)
    assert all(w > 0 for _, w in trace)
    assert working_set(trace) == sum({k: w for k, w in trace}.values())


def test_replay_table_bounds(trace):
    rows = replay_table(trace, fractions=(0.25, 0.5, 1.0))
    n, distinct = len(trace), len({k for k, _ in trace})
    compulsory = 1 - distinct / n
    for row in rows:
        res = row["results"]
        bound_obj, bound_byte = res["upper bound (PFOO-U)"]
        for name, (obj, byte) in res.items():
            assert 0.0 <= obj <= compulsory + 1e-9 and 0.0 <= byte <= 1.0, name
            assert obj <= bound_obj + 1e-9 and byte <= bound_byte + 1e-9, name
    full = rows[-1]["results"]
    for name in ("bytecache lru", "cachetools LRU"):  # everything fits: only compulsory misses
        assert full[name][0] == pytest.approx(compulsory)
    # LRU in ByteCache and cachetools' LRUCache agree request by request
    for row in rows:
        assert row["results"]["bytecache lru"] == pytest.approx(row["results"]["cachetools LRU"])


def test_cli_prints_the_table(capsys):
    assert main([str(TRACE), "--fractions", "0.5", "--no-offline"]) == 0
    out = capsys.readouterr().out
    assert "working set" in out and "| 50% (" in out and "cachetools LRU" in out
