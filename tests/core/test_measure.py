"""Deep measurement and the calibrator that samples it."""

import importlib.util
import json

import pytest

from bytecache.measure import Calibrator, LinearFit, deep_sizeof, walk_sizeof


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


#: process-wide: a module global and a class attribute that instances point at
_MODULE_DEFAULTS = frozenset(range(1000, 1050))


class _Task:
    RETRY_DELAYS = [float(i) for i in range(100)]

    def __init__(self, own):
        self.own = own
        self.retry_delays = self.RETRY_DELAYS
        self.defaults = _MODULE_DEFAULTS


def test_walker_does_not_charge_a_value_for_what_its_class_or_module_holds():
    own = [str(i) * 3 for i in range(200)]
    bare = _Task(own)
    bare.retry_delays = bare.defaults = None
    assert walk_sizeof(_Task(own)) == walk_sizeof(bare)  # the class's list and the module's frozenset are not its own
    assert walk_sizeof(_Task(own)) > walk_sizeof(own) > 0  # its own objects are
    # many values together hold them once as well: the sum of their walks is the walk of all of them
    tasks = [_Task([str(i) * 3 for i in range(k, k + 50)]) for k in range(5)]
    assert sum(walk_sizeof(t) for t in tasks) == walk_sizeof(tuple(tasks)) - walk_sizeof((None,) * 5)


def test_calibrator_samples_warmup_then_one_in_every():
    measured = []
    cal = Calibrator(warmup=3, every=10, measure=lambda obj: measured.append(obj) or 400, timer=Ticker())
    sampled = [cal.observe(i, 100) for i in range(1, 34)]
    assert sampled.count(True) == 3 + 3 and measured == [1, 2, 3, 13, 23, 33]
    assert cal.ratio == 4.0 and cal.samples == 6 and cal.weight(1000) == 4000


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
    # after each sample the share is checked again: at most one sample over the line
    assert cal.seconds_measuring <= 0.1 * clock.now + 1.0
    assert sampled == 5 and cal.skipped_for_time == 100 - 5


def test_calibrator_learns_the_real_ratio_from_json():
    docs = [{"tasks": [{"id": f"t{i}", "deps": list(range(i % 5))} for i in range(n)]} for n in (10, 50, 200)]
    cal = Calibrator(warmup=3, measure=walk_sizeof)
    for doc in docs:
        cal.observe(doc, len(json.dumps(doc)))
    deep = [walk_sizeof(doc) for doc in docs]
    proxy = [len(json.dumps(doc)) for doc in docs]
    assert cal.samples == 3 and cal.ratio == sum(deep) / sum(proxy)
    # the model's one coefficient: relative least squares over the decayed samples, shrunk
    # towards the prior of 4 (scale 4)
    w, d = cal.model.prior_weight, cal.model.decay
    ages = [d ** (len(docs) - 1 - i) for i in range(len(docs))]
    expected = (sum(a * x / y for a, x, y in zip(ages, proxy, deep)) + w * 4 / 16) / (
        sum(a * (x / y) ** 2 for a, x, y in zip(ages, proxy, deep)) + w / 16
    )
    assert cal.model.coefficients["bytes"] == pytest.approx(expected, rel=1e-9)
    assert cal.weight(1000) == round(1000 * expected)


def test_calibrator_before_any_sample_uses_the_model_prior():
    cal = Calibrator(model=LinearFit({"bytes": 3.5}))
    assert cal.ratio is None and cal.weight(100) == 350
    assert not cal.observe("ignored", 0) and cal.seen == 0


@pytest.mark.parametrize(
    "kwargs, name",
    [({"warmup": -1}, "warmup"), ({"every": 0}, "every"), ({"max_time_share": 0}, "max_time_share"), ({"every": True}, "every")],
)
def test_calibrator_rejects_bad_settings(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Calibrator(**kwargs)


# -- the linear model ----------------------------------------------------------------------------
def affine(tasks_a: int, tasks_b: int, text: int) -> tuple[dict, float]:
    """Features of a value and its 'true' size: 7 kB fixed, 3,300 B per a-task, 2,600 per
    b-task, 1.2 B per byte of serialized text; serialized: ~530 B per task plus the text."""
    features = {"fixed": 1, "bytes": 530 * (tasks_a + tasks_b) + text, "tasks:a": tasks_a, "tasks:b": tasks_b}
    size = 7_000 + 3_300 * tasks_a + 2_600 * tasks_b + 1.2 * (530 * (tasks_a + tasks_b) + text)
    return features, size


MIX = [(5, 0, 0), (0, 50, 0), (500, 0, 0), (0, 2000, 0), (5000, 0, 0), (0, 20, 2_000_000)]


def test_linear_fit_predicts_every_class_of_a_mix_where_one_ratio_cannot():
    fit = LinearFit({"fixed": 8_000, "bytes": 1.4}, prior_for=lambda name: 2_600.0)
    for _ in range(5):
        for shape in MIX:
            fit.add(*affine(*shape))
    one_ratio = sum(affine(*s)[1] for s in MIX) / sum(affine(*s)[0]["bytes"] for s in MIX)
    for shape in MIX:
        features, size = affine(*shape)
        assert fit.predict(features) == pytest.approx(size, rel=0.02), shape
    # what a single bytes-per-byte ratio gets wrong on the same mix: the smallest and the
    # text-heavy class by far more than 10%
    errors = {s: features["bytes"] * one_ratio / size - 1 for s in MIX for features, size in [affine(*s)]}
    assert errors[(5, 0, 0)] < -0.10 and errors[(0, 20, 2_000_000)] > 0.5


def test_linear_fit_weighs_relative_errors_so_small_values_count():
    # two features that only the small values tell apart: an absolute least-squares fit would
    # let the large values decide and miss the small ones by far
    fit = LinearFit({"fixed": 1_000.0, "bytes": 1.0}, prior_weight=1e-6)
    for n in (10, 20, 1_000_000, 2_000_000):
        fit.add({"fixed": 1, "bytes": n}, 5_000 + 2 * n)
    assert fit.predict({"fixed": 1, "bytes": 10}) == pytest.approx(5_020, rel=0.01)
    assert fit.coefficients["fixed"] == pytest.approx(5_000, rel=0.01) and fit.coefficients["bytes"] == pytest.approx(2.0, rel=0.01)


def test_linear_fit_keeps_priors_for_features_it_has_not_seen():
    fit = LinearFit({"fixed": 8_000, "bytes": 1.4}, prior_for=lambda name: 2_600.0 if name.startswith("tasks:") else 0.0)
    assert fit.predict({"fixed": 1, "bytes": 1_000, "tasks:new": 10}) == pytest.approx(8_000 + 1_400 + 26_000)
    for _ in range(20):
        fit.add(*affine(100, 0, 0))
    assert fit.predict({"tasks:never_seen": 10}) == pytest.approx(26_000)
    assert fit.predict({"other": 5}) == 0.0


def test_linear_fit_coefficients_never_go_negative():
    fit = LinearFit({"fixed": 1_000, "bytes": 1.0}, prior_weight=1e-6, decay=1.0)
    for n in (100, 200, 400, 800):
        fit.add({"fixed": 1, "bytes": n}, 3 * n - 200)  # an exact fit needs a fixed cost of -200
    ratios = [n / (3 * n - 200) for n in (100, 200, 400, 800)]
    assert fit.coefficients["fixed"] == 0.0  # pinned, and the rest fitted without it:
    assert fit.coefficients["bytes"] == pytest.approx(sum(ratios) / sum(r * r for r in ratios), rel=1e-3)


def test_linear_fit_blends_samples_with_decay():
    fit = LinearFit({"bytes": 1.0}, prior_weight=1e-9, decay=0.5)
    fit.add({"bytes": 100}, 200)
    assert fit.coefficients["bytes"] == pytest.approx(2.0)
    fit.add({"bytes": 100}, 400)  # the earlier sample counts half as much, not nothing
    assert fit.coefficients["bytes"] == pytest.approx((0.5 * 0.5 + 0.25) / (0.5 * 0.25 + 0.0625))
    assert fit.samples == 2 and 2.0 < fit.coefficients["bytes"] < 4.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"prior": {"bytes": -1}}, r"prior\['bytes'\] must be a number >= 0, got -1"),
        ({"prior": {}, "prior_weight": 0}, "prior_weight must be > 0, got 0"),
        ({"prior": {}, "decay": 1.5}, r"decay must be in \(0, 1\], got 1.5"),
    ],
)
def test_linear_fit_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LinearFit(**kwargs)


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
    has_pympler = str(importlib.util.find_spec("pympler") is not None)
    assert out == ["True", has_pympler]


def test_calibrator_samples_a_new_kind_of_value_soon():
    measured = []
    cal = Calibrator(warmup=0, every=100, min_feature_samples=2, measure=lambda obj: measured.append(obj) or 100, timer=Ticker())
    for i in range(5):
        cal.observe(f"a{i}", {"a": 1})
    assert measured == ["a0", "a1"]  # covered after two samples: from then on one in 100
    cal.observe("b0", {"a": 1, "b": 1})
    assert measured[-1] == "b0" and cal.model.feature_samples == {"a": 3, "b": 1}
    with pytest.raises(ValueError, match="min_feature_samples must be an int >= 0, got -1"):
        Calibrator(min_feature_samples=-1)


def test_calibrator_coverage_keys_tell_kinds_apart_that_features_do_not():
    measured = []
    cal = Calibrator(warmup=0, every=100, min_feature_samples=1, measure=lambda obj: measured.append(obj) or 100, timer=Ticker())
    for name, size in [("small", "x@1"), ("small2", "x@1"), ("big", "x@1000")]:
        if cal.should_sample({"x": 1}, [size]):
            cal.measure_and_record(name, {"x": 1}, [size])
    assert measured == ["small", "big"] and cal.coverage_samples == {"x@1": 1, "x@1000": 1}
