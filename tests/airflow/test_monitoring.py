"""The monitoring kit (integration/airflow/monitoring) against what a real bag really emits."""

from __future__ import annotations

import gc
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import airflow_helpers as helpers
import pytest
import yaml

from airflow.utils.session import create_session

from bytecache_airflow.dagbag import ByteBoundedDagBag
from bytecache_airflow.versions import current

RELEASE = current()

KIT = Path(__file__).resolve().parents[2] / "integration" / "airflow" / "monitoring"
# Airflow's own scheduler metric the kit reads; the scheduler sends it, not the bag.
AIRFLOW_OWN = {"airflow.scheduler.scheduler_loop_duration": "ms"}


def load_mapping() -> list[dict]:
    return yaml.safe_load((KIT / "statsd_mapping.yml").read_text())["mappings"]


def map_name(mappings: list[dict], statsd_name: str) -> tuple[str, dict] | None:
    """statsd_exporter's glob matching: ``*`` stands for one dot-separated component."""
    for rule in mappings:
        pattern = "^" + r"\.".join("([^.]+)" if part == "*" else re.escape(part) for part in rule["match"].split(".")) + "$"
        match = re.match(pattern, statsd_name)
        if match:
            labels = {k: re.sub(r"\$(\d)", lambda m: match.group(int(m.group(1))), v) for k, v in rule.get("labels", {}).items()}
            return rule["name"], labels
    return None


def kit_metric_names() -> set[str]:
    """Every metric name the alerts and the dashboard query (histogram series folded to their base)."""
    texts = [(KIT / "alerts.yml").read_text()]
    dashboard = json.loads((KIT / "dashboard.json").read_text())
    texts += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    texts += [v["query"]["query"] for v in dashboard["templating"]["list"] if isinstance(v.get("query"), dict)]
    names = set()
    for text in texts:
        for name in re.findall(r"\bairflow_[a-z_]+", text):
            names.add(re.sub(r"_(bucket|sum|count)$", "", name))
    return names


def emitted_lines(airflow_db, monkeypatch) -> list[str]:
    """Drive a real bag through every event it reports, with statsd pointed at a real listener."""
    with helpers.statsd_to_listener(monkeypatch) as listener:
        def new_bag(max_bytes, clock):
            return ByteBoundedDagBag(False, max_bytes=max_bytes, ttl=60, policy="lru", stats_prefix="scheduler.dag_bag",
                                     background=False, timer=clock)

        with create_session() as session:
            runs = {n: helpers.get_run(session, airflow_db["dags_by_size"][n]) for n in (10, 100, 1000)}
            probe = new_bag(None, helpers.FakeClock())
            for run in runs.values():
                probe.get_dag_for_run(run, session=session)
            weight = {n: probe.cache.weight_of(helpers.latest_version_id(run.dag_id)) for n, run in runs.items()}
            # room for the 1,000-task DAG alone: loading the 100-task one evicts it, and back
            clock = helpers.FakeClock()
            bag = new_bag(weight[1000] + weight[100] // 2, clock)
            bag.get_dag_for_run(runs[10], session=session)  # miss
            bag.get_dag_for_run(runs[10], session=session)  # hit
            clock.advance(61)
            bag.get_dag_for_run(runs[100], session=session)  # the idle 10-task DAG expires first
            for _ in range(3):
                for n in (1000, 100):
                    bag.get_dag_for_run(runs[n], session=session)
            tiny = new_bag(weight[10] // 2, helpers.FakeClock())
            tiny.get_dag_for_run(runs[10], session=session)  # heavier than the whole budget: rejected
        clock.advance(600)  # past the collection caps (one per 10 s, 1% of the time)
        bag.maintain(force=True)  # the evicted DAGs are collected by the cache, off any lookup
        gc.collect()  # one of Python's own: the next maintenance returns its freed heap to the OS
        clock.advance(600)
        bag.maintain(force=True)
        bag.clear_cache()
        bag.maintain(force=True)
        wanted = ("cache_evictions_size", "cache_evictions_expired", "cache_rejections", "cache_reclaims",
                  "cache_clear", "cache_uncollected_bytes", "cache_trim_duration")
        for name in wanted:
            listener.wait_for(lambda line, name=name: line.startswith(f"airflow.scheduler.dag_bag.{name}"))
        return list(listener.lines)


def test_mapping_covers_every_metric_the_bag_emits_and_every_name_the_kit_queries(airflow_db, monkeypatch):
    mappings = load_mapping()
    lines = emitted_lines(airflow_db, monkeypatch)
    emitted = {}
    for line in lines:
        name, _, rest = line.partition(":")
        name = name.split(",")[0]  # Influx-style tags, when [metrics] statsd_influxdb_enabled is on
        if name.startswith("airflow.scheduler.dag_bag."):
            emitted[name] = rest.split("|")[1]
    # the bag reported every kind of event it was driven through
    for suffix in ("cache_hit", "cache_miss", "cache_clear", "cache_size", "cache_bytes", "cache_max_bytes",
                   "cache_uncollected_bytes", "cache_working_set_bytes", "cache_working_set_entries", "cache_overhead_ms",
                   "cache_reclaim_pause_p50_ms", "cache_reclaim_pause_max_ms", "cache_evictions_size", "cache_evictions_expired",
                   "cache_rejections", "cache_reclaims", "cache_load", "cache_reclaim_duration"):
        assert f"airflow.scheduler.dag_bag.{suffix}" in emitted, (suffix, sorted(emitted))

    unmapped = [name for name in emitted if map_name(mappings, name) is None]
    assert unmapped == [], unmapped
    # a gauge stays a gauge: counters are named *_total, timers *_seconds
    for name, kind in emitted.items():
        prom, labels = map_name(mappings, name)
        assert labels.get("component") == "scheduler", (name, labels)
        expected_suffix = {"c": "_total", "ms": "_seconds"}.get(kind)
        if expected_suffix:
            assert prom.endswith(expected_suffix), (name, kind, prom)
        else:
            assert not prom.endswith(("_total", "_seconds")), (name, kind, prom)
        if name.endswith("_ms") and kind != "ms":  # a count or level of milliseconds keeps its unit
            assert "_milliseconds" in prom, (name, prom)

    produced = {map_name(mappings, name)[0] for name in list(emitted) + list(AIRFLOW_OWN)}
    queried = kit_metric_names()
    missing = sorted(queried - produced)
    assert missing == [], f"the kit queries metrics nothing produces: {missing}"


def test_airflow_still_sends_the_scheduler_loop_timer_the_kit_divides_by():
    import airflow.jobs.scheduler_job_runner as runner

    source = Path(runner.__file__).read_text()
    for name in AIRFLOW_OWN:
        assert f'"{name.removeprefix("airflow.")}"' in source, name


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None and not os.environ.get("CI"),
                    reason="promtool not installed (apt-get install prometheus); .ci/run installs it")
def test_promtool_checks_the_rules_and_runs_their_unit_tests():
    assert PROMTOOL is not None, ".ci/run must install Debian's prometheus package for promtool"
    check = subprocess.run([PROMTOOL, "check", "rules", "alerts.yml"], cwd=KIT, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 5 rules found" in check.stdout, check.stdout
    test = subprocess.run([PROMTOOL, "test", "rules", "alerts_test.yml"], cwd=KIT, capture_output=True, text=True)
    assert test.returncode == 0, test.stdout + test.stderr
    assert "SUCCESS" in test.stdout


def test_every_alert_has_a_firing_and_a_quiet_unit_test():
    rules = yaml.safe_load((KIT / "alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load((KIT / "alerts_test.yml").read_text())["tests"]
    firing, quiet = set(), set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    assert alerts == firing == quiet, (alerts, firing, quiet)


# -- OpenTelemetry: the same metrics through Airflow's own OTLP exporter ----------------------

_OTEL_SCHEDULER = r"""
import json, sys
from airflow.configuration import conf
from airflow._shared.observability.metrics import stats
from airflow.observability.metrics import stats_utils
from airflow.utils.session import create_session
from airflow.models.dagrun import DagRun
from bytecache_airflow.dagbag import ByteBoundedDagBag

# what SchedulerJobRunner._execute does before its loop
stats.initialize(factory=stats_utils.get_stats_factory(), export_legacy_names=conf.getboolean("metrics", "legacy_names_on"))
bag = ByteBoundedDagBag(False, max_bytes="64MiB", stats_prefix="scheduler.dag_bag", background=False)
with create_session() as session:
    run = session.query(DagRun).filter(DagRun.dag_id == sys.argv[1]).one()
    bag.get_dag_for_run(run, session=session)
    bag.get_dag_for_run(run, session=session)
bag.maintain(force=True)
from airflow._shared.observability.metrics.otel_logger import flush_otel_metrics
flush_otel_metrics()
print(json.dumps({"currsize": bag.currsize}))
"""


class OtlpReceiver:
    """A small OTLP/HTTP metrics receiver on 127.0.0.1: decodes every export request it is sent."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

        self.points: list[tuple[str, str, float]] = []  # (service.instance.id, metric name, value)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = metrics_service_pb2.ExportMetricsServiceRequest.FromString(body)
                for resource_metrics in request.resource_metrics:
                    attrs = {a.key: a.value.string_value for a in resource_metrics.resource.attributes}
                    for scope in resource_metrics.scope_metrics:
                        for metric in scope.metrics:
                            kind = metric.WhichOneof("data")
                            for point in getattr(metric, kind).data_points:
                                value = getattr(point, "as_int", 0) or getattr(point, "as_double", 0.0) if kind in ("gauge", "sum") else point.count
                                receiver.points.append((attrs.get("service.instance.id", ""), metric.name, value))
                reply = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.skipif(RELEASE.minor != "3.3", reason="the subprocess starts Airflow 3.3's OTel stats client; 3.1/3.2 keep it elsewhere")
def test_with_otel_on_the_bag_metrics_reach_an_otlp_receiver_per_scheduler_instance(airflow_db):
    import sys

    receiver = OtlpReceiver()
    try:
        currsize = {}
        for instance in ("scheduler-a", "scheduler-b"):
            env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__METRICS__", "OTEL_"))}
            env.update({
                "AIRFLOW__METRICS__OTEL_ON": "True",
                "AIRFLOW__METRICS__OTEL_HOST": "127.0.0.1",
                "AIRFLOW__METRICS__OTEL_PORT": str(receiver.port),
                # each scheduler of an HA pair names itself, as Airflow's docs ask
                "OTEL_RESOURCE_ATTRIBUTES": f"service.instance.id={instance}",
            })
            proc = subprocess.run([sys.executable, "-c", _OTEL_SCHEDULER, airflow_db["dags_by_size"][10]],
                                  env=env, capture_output=True, text=True, timeout=180)
            assert proc.returncode == 0, proc.stderr[-4000:]
            currsize[instance] = json.loads(proc.stdout.strip().splitlines()[-1])["currsize"]
    finally:
        receiver.close()
    for instance in ("scheduler-a", "scheduler-b"):
        got = {}
        for who, name, value in receiver.points:
            if who == instance:
                got[name] = value
        assert got.get("airflow.scheduler.dag_bag.cache_bytes") == currsize[instance] > 0, (instance, got)
        assert got.get("airflow.scheduler.dag_bag.cache_max_bytes") == 64 * 1024**2, (instance, got)
        assert got.get("airflow.scheduler.dag_bag.cache_hit") == 1, (instance, got)
        assert got.get("airflow.scheduler.dag_bag.cache_miss") == 1, (instance, got)
        assert got.get("airflow.scheduler.dag_bag.cache_load", 0) >= 1, (instance, got)
