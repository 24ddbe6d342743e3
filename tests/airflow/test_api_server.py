"""The opt-in API-server bag: ``[api] dag_cache_max_bytes`` swaps the real app's bag at start-up,
and a bad ``[api]`` value stops ``airflow api-server`` before it serves anything."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
import uuid

import airflow_helpers as helpers
import pytest

from airflow.utils.session import create_session

from bytecache_airflow.dagbag import ByteBoundedDagBag
from bytecache_airflow.hooks import STARTUP_FAILURE, api_root_middlewares, build_api_dag_bag
from bytecache_airflow.versions import current


def _app_after_startup():
    from airflow.api_fastapi.app import create_app

    from starlette.testclient import TestClient

    helpers.forget_fastapi_plugins()  # read the plugin's middlewares again
    app = create_app(apps="core,execution")
    with TestClient(app):  # runs the lifespan: the first ASGI event the middleware sees
        return app


@pytest.mark.filterwarnings("ignore")
def test_api_bag_opt_in(airflow_db, monkeypatch):
    monkeypatch.setenv("AIRFLOW__API__DAG_CACHE_MAX_BYTES", "48MiB")
    monkeypatch.setenv("AIRFLOW__API__DAG_CACHE_TTL", "120")
    app = _app_after_startup()
    bag = app.state.dag_bag
    assert isinstance(bag, ByteBoundedDagBag)
    assert (bag.max_bytes, bag.ttl, bag._stats_prefix) == (48 * 1024**2, 120.0, "api_server.dag_bag")
    mounted = [r.app for r in app.routes if hasattr(getattr(getattr(r, "app", None), "state", None), "dag_bag")]
    assert mounted, "the execution API is mounted with its own reference to the bag"
    assert all(sub.state.dag_bag is bag for sub in mounted)
    with create_session() as session:
        run = helpers.get_run(session, airflow_db["dags_by_size"][10])
        assert bag.get_dag_for_run(run, session=session).dag_id == run.dag_id


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("policy", [None, "airflow"])
def test_api_keeps_airflows_bag_unless_opted_in(airflow_db, monkeypatch, caplog, policy):
    import logging

    monkeypatch.delenv("AIRFLOW__API__DAG_CACHE_MAX_BYTES", raising=False)
    if policy:  # the explicit off wins over a budget
        monkeypatch.setenv("AIRFLOW__API__DAG_CACHE_MAX_BYTES", "48MiB")
        monkeypatch.setenv("AIRFLOW__API__DAG_CACHE_POLICY", policy)
    assert api_root_middlewares() == [] and build_api_dag_bag() is None
    monkeypatch.setattr("bytecache_airflow.hooks._api_logged", False)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bytecache_airflow"):
        app = _app_after_startup()
    assert type(app.state.dag_bag) is current().airflow_bag_class()  # CachedDBDagBag on 3.3, DBDagBag before
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("bytecache:")]
    assert len(lines) == 1 and "using Airflow's own DAG cache" in lines[0], lines
    if not policy:
        assert "set [api] dag_cache_max_bytes" in lines[0]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("DAG_CACHE_MAX_BYTES", "-3", "[api] dag_cache_max_bytes = '-3' is not a valid size"),
     ("DAG_CACHE_MAX_BYTES", "512", "[api] dag_cache_max_bytes = '512' is below 16.0 MiB"),
     ("DAG_CACHE_POLICY", "fifo", "[api] dag_cache_policy = 'fifo' is not a valid policy")],
)
def test_api_bad_value_refuses_with_one_line(airflow_db, monkeypatch, capsys, key, value, message):
    monkeypatch.setenv("AIRFLOW__API__DAG_CACHE_MAX_BYTES", "48MiB")
    monkeypatch.setenv(f"AIRFLOW__API__{key}", value)
    with pytest.raises(SystemExit) as info:
        api_root_middlewares()
    assert info.value.code == STARTUP_FAILURE
    err = capsys.readouterr().err
    assert err.startswith(f"bytecache: {message}") and err.count("\n") == 1, err


def _api_server(env: dict, port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [helpers.AIRFLOW_BIN, "api-server", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_airflow_api_server_refuses_to_start_on_a_bad_value(db_copy):
    cases = {
        # before the fix: swallowed by uvicorn's lifespan="auto", served without Airflow's lifespan
        ("DAG_CACHE_POLICY", "mru"): "bytecache: [api] dag_cache_policy = 'mru' is not a valid policy",
        ("DAG_CACHE_MAX_BYTES", "512"): "bytecache: [api] dag_cache_max_bytes = '512' is below 16.0 MiB",
    }
    procs = {}
    for (key, value), message in cases.items():  # all at once: each start-up is mostly imports
        env = {**db_copy["env"], "AIRFLOW__API__DAG_CACHE_MAX_BYTES": "64MiB", f"AIRFLOW__API__{key}": value}
        procs[message] = _api_server(env, helpers.free_port())
    for message, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=180)
        finally:
            proc.kill()
        assert proc.returncode == STARTUP_FAILURE, (message, proc.returncode, out[-3000:], err[-3000:])
        assert [line for line in err.splitlines() if line.startswith("bytecache: ")] == [
            line for line in err.splitlines() if message in line
        ] and message in err, (message, err[-3000:])
        assert "Application startup complete" not in out + err


def _get(url: str, headers: dict | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _wait_until_serving(proc: subprocess.Popen, url: str, deadline_s: float = 180) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"api-server exited {proc.returncode}:\n{proc.stderr.read()[-4000:]}")
        try:
            _get(url)
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)  # polling a server start-up, not timing the code under test
    raise AssertionError("api-server did not start serving")


def test_airflow_api_server_with_a_good_value_serves_the_execution_api(db_copy):
    """With our bag in place Airflow's own lifespan still runs: the execution API validates JWTs."""
    from airflow.api_fastapi.execution_api.app import _jwt_generator

    port = helpers.free_port()
    env = dict(db_copy["env"], AIRFLOW__API__DAG_CACHE_MAX_BYTES="64MiB")
    proc = _api_server(env, port)
    base = f"http://127.0.0.1:{port}/execution"
    try:
        _wait_until_serving(proc, f"{base}/health")
        status, body = _get(f"{base}/health/ping")
        assert status == 200 and "JWTValidator" in body, (status, body)
        token = _jwt_generator().generate({"sub": str(uuid.uuid4())})
        # a variable that does not exist: 404 once the token is accepted (an endpoint every
        # supported release has; 3.2 added a list of keys at /variables/keys)
        status, body = _get(f"{base}/variables/bytecache_no_such_key", {"Authorization": f"Bearer {token}"})
        assert status == 404 and "not_found" in body, (status, body)
        status, _ = _get(f"{base}/variables/bytecache_no_such_key", {"Authorization": "Bearer not-a-token"})
        assert status == 403  # validated, not waved through
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=60)
    assert (out + err).count("bytecache: API server DAG cache budget=64.0 MiB") == 1, (out + err)[-4000:]
