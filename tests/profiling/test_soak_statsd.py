"""Airflow's statsd lines, parsed and received over real UDP."""

from __future__ import annotations

import socket
import time

from profiling.soak.statsd import StatsdListener, parse_statsd


def test_parse_statsd_lines_types_and_rates():
    pkt = "airflow.scheduler.dag_bag.cache_hit:1|c\nairflow.scheduler.dag_bag.cache_bytes:1234|g\n" \
          "airflow.scheduler.scheduler_loop_duration:12.5|ms\nairflow.x:2|c|@0.5\ngarbage\nbad:x|c"
    assert parse_statsd(pkt) == [
        ("airflow.scheduler.dag_bag.cache_hit", 1.0, "c"),
        ("airflow.scheduler.dag_bag.cache_bytes", 1234.0, "g"),
        ("airflow.scheduler.scheduler_loop_duration", 12.5, "ms"),
        ("airflow.x", 4.0, "c"),
    ]


def test_listener_sums_counters_keeps_last_gauges_and_times_timers():
    listener = StatsdListener()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for pkt in ("airflow.scheduler.dag_bag.cache_hit:2|c", "airflow.scheduler.dag_bag.cache_hit:3|c",
                        "airflow.scheduler.dag_bag.cache_bytes:10|g\nairflow.scheduler.dag_bag.cache_bytes:7|g",
                        "airflow.scheduler.scheduler_loop_duration:5|ms", "airflow.scheduler.scheduler_loop_duration:6|ms"):
                s.sendto(pkt.encode(), ("127.0.0.1", listener.port))
        deadline = time.monotonic() + 10
        while listener.packets < 5 and time.monotonic() < deadline:
            time.sleep(0.01)  # waiting for the listener thread to receive, not timing anything
        assert listener.counter("scheduler.dag_bag.cache_hit") == 5
        assert listener.gauge("scheduler.dag_bag.cache_bytes") == 7
        assert listener.timer("scheduler.scheduler_loop_duration") == [5.0, 6.0]
        arrivals = listener.timer_arrivals("scheduler.scheduler_loop_duration")
        assert len(arrivals) == 2 and arrivals == sorted(arrivals)
        listener.reset()
        assert listener.counter("scheduler.dag_bag.cache_hit") == 0 and listener.timer_arrivals("x") == []
    finally:
        listener.close()
