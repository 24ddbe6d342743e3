"""Airflow's statsd metrics, received on 127.0.0.1 (an ephemeral port) inside the soak process."""

from __future__ import annotations

import socket
import threading
import time

__all__ = ["parse_statsd", "StatsdListener"]


def parse_statsd(packet: str) -> list[tuple[str, float, str]]:
    """``name:value|type[|@rate]`` lines -> (name, value, type); malformed lines are skipped.
    A sampled counter is scaled back up by its rate."""
    out = []
    for line in packet.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split("|") if rest else []
        if len(parts) < 2:
            continue
        try:
            value = float(parts[0])
        except ValueError:
            continue
        rate = 1.0
        for p in parts[2:]:
            if p.startswith("@"):
                try:
                    rate = float(p[1:]) or 1.0
                except ValueError:
                    pass
        if parts[1] == "c" and rate != 1.0:
            value /= rate
        out.append((name, value, parts[1]))
    return out


class StatsdListener:
    """Counters summed, gauges' last values and timer values, by metric name, in a thread."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.counters: dict[str, float] = {}
        self.gauges: dict[str, float] = {}
        self.timers: dict[str, list[tuple[float, float]]] = {}  # (arrival time.time(), value)
        self.packets = 0
        self.thread = threading.Thread(target=self._run, name="statsd", daemon=True)
        self.thread.start()

    def reset(self) -> None:
        with self.lock:
            self.counters, self.gauges, self.timers, self.packets = {}, {}, {}, 0

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            now = time.time()
            with self.lock:
                self.packets += 1
                for name, value, kind in parse_statsd(data.decode("utf-8", "replace")):
                    if kind == "c":
                        self.counters[name] = self.counters.get(name, 0.0) + value
                    elif kind == "g":
                        self.gauges[name] = value
                    elif kind in ("ms", "h", "d"):
                        self.timers.setdefault(name, []).append((now, value))

    def counter(self, suffix: str) -> float:
        with self.lock:
            return sum(v for k, v in self.counters.items() if k.endswith(suffix))

    def gauge(self, suffix: str) -> float | None:
        with self.lock:
            return next((v for k, v in self.gauges.items() if k.endswith(suffix)), None)

    def timer(self, suffix: str) -> list[float]:
        with self.lock:
            return [x for k, v in self.timers.items() if k.endswith(suffix) for _, x in v]

    def timer_arrivals(self, suffix: str) -> list[float]:
        """When each value of a timer arrived (``time.time()``), in order."""
        with self.lock:
            return sorted(t for k, v in self.timers.items() if k.endswith(suffix) for t, _ in v)

    def settle(self, quiet: float = 1.0, limit: float = 5.0) -> None:
        """Wait until no packet arrived for ``quiet`` seconds (the last ones after a process exit)."""
        deadline = time.monotonic() + limit
        seen = -1
        while time.monotonic() < deadline:
            with self.lock:
                n = self.packets
            if n == seen:
                return
            seen = n
            time.sleep(quiet)

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
