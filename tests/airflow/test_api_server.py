"""The opt-in API-server bag: ``[api] dag_cache_max_bytes`` swaps the real app's bag at start-up."""

from __future__ import annotations

import airflow_helpers as helpers
import pytest

from airflow.models.dagbag import DBDagBag
from airflow.utils.session import create_session

from bytecache_airflow.dagbag import ByteBoundedDagBag
from bytecache_airflow.hooks import build_api_dag_bag


def _app_after_startup(monkeypatch):
    from airflow.api_fastapi.app import create_app

    from starlette.testclient import TestClient

    app = create_app(apps="core,execution")
    with TestClient(app):  # runs the lifespan: the first ASGI event the middleware sees
        return app


@pytest.mark.filterwarnings("ignore")
def test_api_bag_opt_in(airflow_db, monkeypatch):
    monkeypatch.setenv("AIRFLOW__API__DAG_CACHE_MAX_BYTES", "48MiB")
    monkeypatch.setenv("AIRFLOW__API__DAG_CACHE_TTL", "120")
    app = _app_after_startup(monkeypatch)
    bag = app.state.dag_bag
    assert isinstance(bag, ByteBoundedDagBag)
    assert (bag.max_bytes, bag.ttl, bag._stats_prefix) == (48 * 1024**2, 120.0, "api_server.dag_bag")
    mounted = [r.app for r in app.routes if getattr(getattr(r, "app", None), "state", None) is not None]
    assert all(sub.state.dag_bag is bag for sub in mounted if hasattr(sub.state, "dag_bag"))
    with create_session() as session:
        run = helpers.get_run(session, airflow_db["dags_by_size"][10])
        assert bag.get_dag_for_run(run, session=session).dag_id == run.dag_id


def test_api_bag_not_opted_in_keeps_airflows(airflow_db, monkeypatch):
    from types import SimpleNamespace

    from bytecache_airflow.hooks import swap_app_dag_bag

    monkeypatch.delenv("AIRFLOW__API__DAG_CACHE_MAX_BYTES", raising=False)
    assert build_api_dag_bag() is None
    stock = DBDagBag()
    app = SimpleNamespace(state=SimpleNamespace(dag_bag=stock), routes=[])
    assert swap_app_dag_bag(app) is stock and app.state.dag_bag is stock


def test_api_bad_value_names_the_option(airflow_db, monkeypatch):
    monkeypatch.setenv("AIRFLOW__API__DAG_CACHE_MAX_BYTES", "-3")
    with pytest.raises(SystemExit, match=r"\[api\] dag_cache_max_bytes = '-3'"):
        build_api_dag_bag()
