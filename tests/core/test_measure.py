"""Deep measurement and the calibrator that samples it."""

import json

import pytest

from bytecache.measure import Calibrator, deep_sizeof


def test_deep_sizeof_counts_what_a_value_reaches():
    small = {"a": 1}
    big = {"a": 1, "payload": [f"{i:04d}" * 250 for i in range(100)]}  # 100 distinct 1000-char strings
    assert deep_sizeof(big) > deep_sizeof(small) + 100_000
    for use_pympler in (False, True):
        pytest.importorskip("pympler") if use_pympler else None
        size = deep_sizeof(big, use_pympler=use_pympler)
        assert 100_000 < size < 200_000


def test_deep_sizeof_counts_shared_objects_once():
    shared = "y" * 10_000
    assert deep_sizeof([shared, shared], use_pympler=False) < deep_sizeof([shared, "z" * 10_000], use_pympler=False)


class Ticker:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_calibrator_samples_warmup_then_one_in_every():
    measured = []
    cal = Calibrator(warmup=3, every=10, measure=lambda obj: measured.append(obj) or 400, timer=Ticker())
    sampled = [cal.observe(i, 100) for i in range(1, 34)]
    assert sampled.count(True) == 3 + 3 and measured == [1, 2, 3, 13, 23, 33]
    assert cal.ratio == pytest.approx(4.0) and cal.weight(1000) == 4000


def test_calibrator_skips_samples_when_measuring_takes_too_much_time():
    clock = Ticker()

    def slow_measure(obj):
        clock.now += 1.0  # each measurement takes a second
        return 10

    cal = Calibrator(warmup=1, every=1, measure=slow_measure, max_time_share=0.1, timer=clock)
    cal.observe("first", 5)
    assert cal.samples == 1
    sampled = 0
    for _ in range(100):
        clock.now += 0.5  # half a second of other work between values
        sampled += cal.observe("value", 5)
    assert cal.seconds_measuring <= 0.1 * clock.now + 1.0
    assert 0 < sampled < 20 and cal.skipped_for_time > 0


def test_calibrator_learns_a_real_ratio_from_json():
    docs = [{"tasks": [{"id": f"t{i}", "deps": list(range(i % 5))} for i in range(n)]} for n in (10, 50, 200)]
    cal = Calibrator(warmup=3)
    for doc in docs:
        cal.observe(doc, len(json.dumps(doc)))
    assert cal.samples == 3 and 1.5 < cal.ratio < 20


def test_calibrator_before_any_sample_uses_the_default_ratio():
    cal = Calibrator()
    assert cal.ratio is None and cal.weight(100, default_ratio=3.5) == 350
    assert not cal.observe("ignored", 0)


@pytest.mark.parametrize(
    "kwargs, name",
    [({"warmup": -1}, "warmup"), ({"every": 0}, "every"), ({"max_time_share": 0}, "max_time_share"), ({"every": True}, "every")],
)
def test_calibrator_rejects_bad_settings(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Calibrator(**kwargs)


def test_pympler_is_imported_only_when_used():
    # pympler pulls in numpy (~11 MB of RSS): importing bytecache must not pay for it.
    import subprocess
    import sys

    code = (
        "import sys, bytecache, bytecache.measure as m\n"
        "assert 'pympler' not in sys.modules, 'imported at import'\n"
        "m.walk_sizeof([1, 2])\n"
        "assert 'pympler' not in sys.modules, 'imported by the walker'\n"
        "print(m.deep_sizeof([1, 2]) > 0, 'pympler' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    try:
        import pympler  # noqa: F401
        has_pympler = "True"
    except ImportError:
        has_pympler = "False"
    assert out == ["True", has_pympler]


def test_calibrator_restart_replaces_earlier_samples():
    calibrator = Calibrator(warmup=10, every=1, measure=len)
    calibrator.observe("x" * 400, 100)
    assert calibrator.ratio == 4.0
    assert calibrator.observe("x" * 900, 100, restart=True)
    assert calibrator.ratio == 9.0 and calibrator.samples == 2
    calibrator.observe("x" * 300, 100)
    assert calibrator.ratio == 6.0
