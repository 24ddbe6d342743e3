"""The byte-bounded bag against a real metadata DB, through ``get_dag_for_run``."""

from __future__ import annotations

import gc
import threading

import airflow_helpers as helpers
import pytest

from bytecache.measure import Calibrator, LinearFit, walk_sizeof

from airflow.utils.session import create_session

from bytecache_airflow.dagbag import ByteBoundedDagBag, serialized_size
from bytecache_airflow.versions import current
from bytecache_airflow.weighing import dag_calibrator, dag_features, dag_weighing_model


def make_bag(clock=None, **kwargs) -> ByteBoundedDagBag:
    kwargs.setdefault("max_bytes", "64MiB")
    kwargs.setdefault("stats_prefix", "test.dag_bag")
    kwargs.setdefault("background", False)
    kwargs.setdefault("revalidation_interval", 30)
    return ByteBoundedDagBag(load_op_links=False, timer=clock or helpers.FakeClock(), **kwargs)


def counters(bag):
    s = bag.cache.stats()
    return s.loads, s.hits


def test_is_the_schedulers_bag_class_with_byte_budget(airflow_db):
    bag = make_bag(max_bytes="32MiB", ttl=600, policy="lru")
    assert isinstance(bag, current().airflow_bag_class())  # CachedDBDagBag on 3.3, DBDagBag before
    assert bag.max_bytes == 32 * 1024**2 and bag.ttl == 600 and bag.policy == "lru"
    # calibrated by the stdlib walker: pympler's numpy import and scratch memory would land in
    # the scheduler RSS the budget bounds
    assert bag.calibrator.measure is walk_sizeof


def test_hits_misses_and_weights(airflow_db):
    calibrator = dag_calibrator(warmup=3, every=1_000_000)
    bag = make_bag(calibrator=calibrator)
    with create_session() as session:
        runs = [helpers.get_run(session, airflow_db["dags_by_size"][n]) for n in (10, 100, 1000)]
        for run in runs:  # first visit: a miss each, loaded from the DB
            dag = bag.get_dag_for_run(run, session=session)
            assert dag is not None and dag.dag_id == run.dag_id
        assert counters(bag) == (3, 0)
        assert calibrator.samples == 0  # nothing is deep-measured on a lookup
        for run in runs:  # second visit: hits, same objects
            assert bag.get_dag_for_run(run, session=session) is bag.cache.get(
                helpers.latest_version_id(run.dag_id)
            ).dag
        assert bag.cache.stats().loads == 3

    # weights = the model's prediction from the DAG's features (its stored JSON length, its tasks
    # by type), with the coefficients it had at load: here the priors
    model = dag_weighing_model()
    total = 0
    for n in (10, 100, 1000):
        version_id = helpers.latest_version_id(airflow_db["dags_by_size"][n])
        dag_hash, json_length, compressed = helpers.serialized_row(version_id)
        assert compressed is None
        entry = bag.cache.get(version_id)
        assert entry.serialized_bytes == json_length
        features = dag_features(entry.dag, json_length)
        assert features == {"fixed": 1.0, "bytes": json_length, "tasks:EmptyOperator": n}
        assert bag.cache.weight_of(version_id) == round(model.predict(features))
        total += bag.cache.weight_of(version_id)
    assert bag.currsize == total

    # the maintenance step measures the three used DAGs (the warm-up) and refits
    bag.maintain()
    assert calibrator.samples == 3 and calibrator.seconds_measuring > 0
    coefficients = calibrator.state()["coefficients"]
    assert coefficients != model.coefficients and coefficients["tasks:EmptyOperator"] > 0
    bag2 = make_bag(calibrator=calibrator)
    with create_session() as session:
        for n in (10, 100, 1000):
            run = helpers.get_run(session, airflow_db["dags_by_size"][n])
            dag = bag2.get_dag_for_run(run, session=session)
            version_id = helpers.latest_version_id(run.dag_id)
            json_length = helpers.serialized_row(version_id)[1]
            predicted = calibrator.model.predict(dag_features(dag, json_length))
            assert bag2.cache.weight_of(version_id) == round(predicted)
            # fitted on these very DAGs: close to what the walker measures now
            assert bag2.cache.weight_of(version_id) == pytest.approx(walk_sizeof(dag), rel=0.1)


def test_budget_never_exceeded_and_evictions_accounted(airflow_db):
    calibrator = Calibrator(warmup=1, every=1_000_000)
    bag = make_bag(max_bytes=None, calibrator=calibrator)
    with create_session() as session:
        run_big = helpers.get_run(session, airflow_db["dags_by_size"][1000])
        bag.get_dag_for_run(run_big, session=session)
        big_weight = bag.currsize
    # a budget that holds the 1,000-task DAG but not it and the 100-task one together
    small = make_bag(max_bytes=int(big_weight * 1.05), calibrator=calibrator, reclaim_soft_fraction=10.0,
                     reclaim_hard_fraction=10.0)
    peak = 0
    with create_session() as session:
        runs = [helpers.get_run(session, airflow_db["dags_by_size"][n]) for n in (10, 100, 1000)]
        for _ in range(3):
            for run in runs:
                assert small.get_dag_for_run(run, session=session).dag_id == run.dag_id
                peak = max(peak, small.currsize)
                assert small.currsize <= small.max_bytes
        stats = small.cache.stats()
        assert stats.evictions_size > 0
        assert peak <= small.max_bytes
        # every evicted byte is counted as uncollected until a full collection
        assert small.uncollected_bytes > 0
    gc.collect()
    assert small.uncollected_bytes == 0


def test_rejects_a_dag_heavier_than_the_budget(airflow_db):
    bag = make_bag(max_bytes="64KiB")
    with create_session() as session:
        run = helpers.get_run(session, airflow_db["dags_by_size"][1000])
        dag = bag.get_dag_for_run(run, session=session)
        assert dag is not None and len(dag.task_dict) == 1000
        assert bag.cache.stats().rejections == 1 and len(bag.cache) == 0


def test_a_run_that_moves_to_a_new_version_drops_the_superseded_one_at_once(airflow_db):
    dags_dir = airflow_db["dags"]
    dag_id = "churn"
    path = helpers.write_dag_file(dags_dir, dag_id, 20, doc="v1")
    helpers.parse_and_sync(path)
    helpers.create_running_run(dag_id)  # its task instances pin v1: a rewrite makes a new version
    v1 = helpers.latest_version_id(dag_id)

    bag = make_bag(ttl=3600)
    with create_session() as session:
        run = helpers.get_run(session, dag_id)
        assert bag.get_dag_for_run(run, session=session).doc_md == "v1"
        assert list(bag.cache) == [v1]
    v1_weight = bag.cache.weight_of(v1)
    pending = bag.reclaimer.refresh()

    helpers.write_dag_file(dags_dir, dag_id, 20, doc="v2")
    helpers.parse_and_sync(path)
    v2 = helpers.latest_version_id(dag_id)
    assert v2 != v1

    with create_session() as session:
        run = helpers.get_run(session, dag_id)
        # the unversioned dags-folder bundle resolves the run to the latest version: v1 is done with
        assert bag.get_dag_for_run(run, session=session).doc_md == "v2"
        assert list(bag.cache) == [v2] and bag.currsize == bag.cache.weight_of(v2)
        assert bag.superseded_dropped == 1 and bag.snapshot().superseded == 1
        assert bag.reclaimer.refresh() == pending + v1_weight  # dropped is not freed: awaits a collection
        assert bag.get_dag_for_run(run, session=session).doc_md == "v2"  # a hit supersedes nothing more
        assert bag.superseded_dropped == 1 and counters(bag) == (2, 1)

        # a run pinned to a bundle version (a versioned bundle) reads the version it was created
        # with, and an older run's version is not superseded by a newer one
        run.bundle_version = "pinned"
        assert bag.get_dag_for_run(run, session=session).doc_md == "v1"
        assert set(bag.cache) == {v1, v2} and bag.superseded_dropped == 1
        session.rollback()


def test_a_version_no_run_reads_any_more_expires_by_ttl(airflow_db):
    clock = helpers.FakeClock()
    bag = make_bag(clock, ttl=300, maintenance_interval=1)
    with create_session() as session:
        idle, busy = (helpers.get_run(session, airflow_db["dags_by_size"][n]) for n in (10, 100))
        bag.get_dag_for_run(idle, session=session)
        for _ in range(4):  # the busy DAG stays in use; the idle one goes past the TTL
            clock.advance(100)
            bag.get_dag_for_run(busy, session=session)
    assert list(bag.cache) == [helpers.latest_version_id(busy.dag_id)]
    assert bag.cache.stats().evictions_expired == 1 and bag.superseded_dropped == 0
    assert bag.currsize == bag.cache.weight_of(helpers.latest_version_id(busy.dag_id))


def test_in_place_rewrite_picked_up_after_revalidation_window(airflow_db):
    dags_dir = airflow_db["dags"]
    dag_id = "inplace"
    path = helpers.write_dag_file(dags_dir, dag_id, 15, doc="a")
    helpers.parse_and_sync(path)
    helpers.create_running_run(dag_id)
    helpers.write_dag_file(dags_dir, dag_id, 15, doc="b")  # new version, no task instances yet
    helpers.parse_and_sync(path)
    version = helpers.latest_version_id(dag_id)

    clock = helpers.FakeClock()
    bag = make_bag(clock, revalidation_interval=30)
    with create_session() as session:
        run = helpers.get_run(session, dag_id)
        assert bag.get_dag_for_run(run, session=session).doc_md == "b"

    helpers.write_dag_file(dags_dir, dag_id, 15, doc="c")  # same version id, rewritten in place
    helpers.parse_and_sync(path)
    assert helpers.latest_version_id(dag_id) == version

    with create_session() as session:
        run = helpers.get_run(session, dag_id)
        clock.advance(10)
        assert bag.get_dag_for_run(run, session=session).doc_md == "b"  # inside the window: cached
        clock.advance(25)  # 35 s since validation: check dag_hash, reload
        assert bag.get_dag_for_run(run, session=session).doc_md == "c"
        assert bag.cache.stats().loads == 2
        clock.advance(5)
        assert bag.get_dag_for_run(run, session=session).doc_md == "c"
        assert bag.cache.stats().loads == 2
    assert bag.uncollected_bytes > 0  # the stale copy was dropped


def test_single_flight_concurrent_misses_load_once(airflow_db):
    bag = make_bag(clock=None)
    dag_id = airflow_db["dags_by_size"][1000]
    barrier = threading.Barrier(4)
    results, errors = [], []

    def worker():
        try:
            with create_session() as session:
                run = helpers.get_run(session, dag_id)
                barrier.wait()
                results.append(bag.get_dag_for_run(run, session=session))
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len({id(d) for d in results}) == 1
    assert bag.cache.stats().loads == 1


def test_other_methods_keep_airflow_behaviour(airflow_db):
    bag = make_bag()
    with create_session() as session:
        version_id = helpers.latest_version_id(airflow_db["dags_by_size"][10])
        model = bag.get_serialized_dag_model(version_id, session=session)
        assert model is not None and model.dag_version_id == version_id
        assert len(bag.cache) == 0  # read from the DB, not cached
        all_dags = list(bag.iter_all_latest_version_dags(session=session))
        assert {d.dag_id for d in all_dags} >= set(airflow_db["dags_by_size"].values())
        assert len(bag.cache) == 0  # bypasses the cache
        assert bag.get_dag("00000000-0000-7000-8000-000000000000", session=session) is None
        dag = bag.get_latest_version_of_dag(airflow_db["dags_by_size"][10], session=session)
        assert dag.dag_id == airflow_db["dags_by_size"][10]
        assert version_id in bag.cache
        assert bag.get_dag(version_id, session=session) is dag
        bag.get_dag(helpers.latest_version_id(airflow_db["dags_by_size"][100]), session=session)
    assert bag.clear_cache() == 2
    assert len(bag.cache) == 0 and bag.currsize == 0


def test_compressed_serialized_dags_weigh_uncompressed_length(airflow_db, monkeypatch):
    helpers.compress_serialized_dags(monkeypatch)
    dag_id = "compressed"
    path = helpers.write_dag_file(airflow_db["dags"], dag_id, 50)
    helpers.parse_and_sync(path)
    version_id = helpers.latest_version_id(dag_id)
    _, json_length, compressed = helpers.serialized_row(version_id)
    assert compressed and json_length in (None, 4)  # the JSON column holds null
    import zlib

    uncompressed = len(zlib.decompress(compressed))
    calibrator = Calibrator(warmup=0, every=1_000_000)  # never samples: its default 4 per JSON byte
    bag = make_bag(calibrator=calibrator)
    with create_session() as session:
        assert bag.get_dag(version_id, session=session).dag_id == dag_id
        assert bag.cache.get(version_id).serialized_bytes == uncompressed
        assert bag.cache.weight_of(version_id) == round(uncompressed * 4.0)
        model = bag.get_serialized_dag_model(version_id, session=session)
        assert serialized_size(model) == uncompressed


def test_samples_used_dags_only_and_blends_them(airflow_db):
    # A DAG the scheduler has worked with is bigger than a fresh one, and the budget bounds the
    # former: the warm-up samples DAGs on their first hit, later samples are DAGs evicted after a
    # hit (never one evicted unused); each sample is blended with the earlier ones.
    measured = []
    with create_session() as session:
        run10 = helpers.get_run(session, airflow_db["dags_by_size"][10])
        run100 = helpers.get_run(session, airflow_db["dags_by_size"][100])
        run1000 = helpers.get_run(session, airflow_db["dags_by_size"][1000])
        json10 = helpers.serialized_row(helpers.latest_version_id(run10.dag_id))[1]
        json100 = helpers.serialized_row(helpers.latest_version_id(run100.dag_id))[1]
        factors = [1.0, 1.02, 0.98]  # measured bytes per JSON byte of each sample
        sizes = iter(round(json10 * f) for f in factors)
        model = LinearFit({"bytes": 1.0}, decay=1.0)
        calibrator = Calibrator(model=model, warmup=1, every=1, measure=lambda dag: measured.append(dag.dag_id) or next(sizes))
        # room for the 100-task DAG alone (~1 byte per JSON byte): loading it pushes the 10-task one out (LRU)
        bag = make_bag(max_bytes=round(json100 * 1.03), policy="lru", calibrator=calibrator)
        bag.get_dag_for_run(run10, session=session)
        bag.get_dag_for_run(run10, session=session)  # its first hit: the warm-up sample
        assert measured == []  # queued for the maintenance step, not measured on the lookup
        bag.maintain()
        assert measured == [run10.dag_id] and calibrator.samples == 1
        bag.get_dag_for_run(run100, session=session)  # evicts the 10-task DAG, used: a sample
        assert bag.cache.stats().evictions_size == 1
        bag.get_dag_for_run(run10, session=session)  # evicts the 100-task DAG, never hit: none
        assert bag.cache.stats().evictions_size == 2
        bag.maintain()
        assert measured == [run10.dag_id] * 2 and calibrator.samples == 2
        bag.get_dag_for_run(run10, session=session)  # a hit
        bag.get_dag_for_run(run1000, session=session)  # too heavy: rejected, nothing evicted
        bag.get_dag_for_run(run100, session=session)  # evicts the used 10-task DAG: a sample
        bag.maintain()
        assert measured == [run10.dag_id] * 3 and calibrator.samples == 3
        # blended, not restarted: the relative least-squares fit of all three and the prior
        w = model.prior_weight
        blended = (sum(1 / f for f in factors) + w) / (sum(1 / f**2 for f in factors) + w)
        assert model.coefficients["bytes"] == pytest.approx(blended, rel=1e-3)
        assert model.coefficients["bytes"] != pytest.approx(factors[-1], rel=1e-3)
        bag.clear_cache()  # explicit removals are no samples
        bag.maintain()
        assert len(measured) == 3



def _two_versions(dags_dir, dag_id: str):
    """``dag_id`` with a pinned first version (a running run) and a second, unpinned one
    (doc ``b``) that the next parse rewrites in place. Returns the second version's id."""
    path = helpers.write_dag_file(dags_dir, dag_id, 15, doc="a")
    helpers.parse_and_sync(path)
    helpers.create_running_run(dag_id)
    helpers.write_dag_file(dags_dir, dag_id, 15, doc="b")
    helpers.parse_and_sync(path)
    return path, helpers.latest_version_id(dag_id)


def test_load_after_in_place_rewrite_while_the_row_sits_in_the_session(airflow_db):
    from airflow.models.serialized_dag import SerializedDagModel
    from sqlalchemy import select

    path, version = _two_versions(airflow_db["dags"], "rewritten_in_session")
    bag = make_bag()
    # not the scoped session: parse_and_sync's own session closes that one (emptying its identity map)
    with create_session(scoped=False) as session:
        # the row is in this session's identity map with its data decoded (as after any ORM read)
        model = session.scalar(select(SerializedDagModel).where(SerializedDagModel.dag_version_id == version))
        assert model.dag.doc_md == "b"
        helpers.write_dag_file(airflow_db["dags"], "rewritten_in_session", 15, doc="c")
        helpers.parse_and_sync(path)  # same version id, new data and hash (another session)
        assert helpers.latest_version_id("rewritten_in_session") == version
        dag = bag.get_dag(version, session=session)
        current_hash = helpers.serialized_row(version)[0]
        # not the old DAG under the new hash, which revalidation would then never catch
        assert (dag.doc_md, bag.cache.get(version).dag_hash) == ("c", current_hash)


def test_last_validated_is_stamped_before_the_read(airflow_db):
    from airflow.settings import engine
    from sqlalchemy import event

    clock = helpers.FakeClock()
    bag = make_bag(clock)
    version = helpers.latest_version_id(airflow_db["dags_by_size"][10])

    def reading_takes_a_while(conn, cursor, statement, parameters, context, executemany):
        if "FROM serialized_dag" in statement:
            clock.advance(100)  # a rewrite could land while the row is read

    event.listen(engine, "before_cursor_execute", reading_takes_a_while)
    try:
        with create_session() as session:
            started = clock()
            bag.get_dag(version, session=session)
    finally:
        event.remove(engine, "before_cursor_execute", reading_takes_a_while)
    assert clock() == started + 100
    assert bag.cache.get(version).last_validated == started


def _statements(run):
    """The SQL statements ``run()`` sends (a listener on the real engine)."""
    from airflow.settings import engine
    from sqlalchemy import event

    seen = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        result = run()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return result, seen


@pytest.mark.parametrize("compressed", [False, True])
def test_a_load_is_one_round_trip_and_one_decompression(airflow_db, monkeypatch, compressed):
    import zlib

    helpers.compress_serialized_dags(monkeypatch, compressed)
    dag_id = f"one_trip_{compressed}"
    helpers.parse_and_sync(helpers.write_dag_file(airflow_db["dags"], dag_id, 40))
    version = helpers.latest_version_id(dag_id)
    _, json_length, blob = helpers.serialized_row(version)
    assert bool(blob) is compressed
    expected_size = len(zlib.decompress(blob)) if compressed else json_length
    decompressions = []
    real_decompress = zlib.decompress
    monkeypatch.setattr(zlib, "decompress", lambda data, *a: decompressions.append(1) or real_decompress(data, *a))

    for read in ("get_dag", "get_latest_version_of_dag"):
        bag = make_bag()
        decompressions.clear()
        with create_session() as session:
            if read == "get_dag":
                dag, statements = _statements(lambda: bag.get_dag(version, session=session))
            else:
                dag, statements = _statements(lambda: bag.get_latest_version_of_dag(dag_id, session=session))
        assert dag.dag_id == dag_id
        reads = [s for s in statements if "serialized_dag" in s]
        assert len(reads) == 1, (read, statements)
        assert len(decompressions) == (1 if compressed else 0), read
        assert bag.cache.get(version).serialized_bytes == expected_size, read


def test_a_version_missing_from_the_db_is_not_a_miss(airflow_db, monkeypatch):
    bag = make_bag()
    counted = []
    monkeypatch.setattr(bag, "_on_cache_miss", lambda: counted.append("miss"))
    monkeypatch.setattr(bag, "_on_cache_hit", lambda: counted.append("hit"))
    with create_session() as session:
        assert bag.get_dag("00000000-0000-7000-8000-000000000000", session=session) is None
        assert counted == [] and len(bag.cache) == 0
        version = helpers.latest_version_id(airflow_db["dags_by_size"][10])
        bag.get_dag(version, session=session)
        bag.get_dag(version, session=session)
    assert counted == ["miss", "hit"]


def test_a_moved_stats_module_is_a_warning_not_an_import_error(airflow_db):
    import subprocess
    import sys

    from bytecache_airflow.versions import current

    module, attribute = current().stats_client
    code = (
        "import sys\n"
        "import airflow.models.dagbag  # Airflow's own modules load first, as in a scheduler\n"
        f"sys.modules[{module!r}] = None  # as if a patch release moved it\n"
        "from bytecache_airflow import dagbag\n"
        "print(type(dagbag.stats).__name__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [l for l in (proc.stdout + proc.stderr).splitlines() if "bytecache: Airflow's stats client" in l]
    assert len(warnings) == 1 and module in warnings[0] and "metrics are off" in warnings[0], proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "NoStats"


def test_maintenance_paused_holds_off_housekeeping_until_the_block_ends(airflow_db):
    clock = helpers.FakeClock()
    bag = make_bag(clock, ttl=60)
    with create_session() as session:
        bag.get_dag_for_run(helpers.get_run(session, "tiny"), session=session)
    clock.advance(120)  # the entry is expired: the next housekeeping drops it
    with bag.maintenance_paused(timeout=0) as paused:
        bag.maintain(now=clock())  # another caller's step: skipped while paused
        assert paused and len(bag.cache._data) == 1
        with bag.maintenance_paused(timeout=0) as second:
            assert not second  # one pause at a time; the block still runs
    bag.maintain(now=clock())
    assert len(bag.cache._data) == 0
