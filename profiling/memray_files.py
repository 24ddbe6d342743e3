"""Reading a memray capture file: what is still allocated under the DAG bag's load path, and the
standard renderings (flamegraphs, stats, summary) beside it.

Under the load path = a frame ``_get_dag`` or ``_read_dag`` in a ``dagbag.py`` (Airflow's bag or
ours) on the allocation's stack. With memray's default tracing that figure is arena-granular:
pymalloc arenas are attributed to whichever stack first touched them, so it is not an object
count; with Python-allocator tracing (``trace_python_allocators``) it is object-exact.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

#: ``get_latest_version_of_dag``: where Airflow 3.1/3.2's ``DBDagBag`` deserializes on the scheduler's path
LOAD_PATH_FUNCS = ("_get_dag", "_read_dag", "get_latest_version_of_dag")


def under_load_path(frames) -> bool:
    return any(fn in LOAD_PATH_FUNCS and str(path).endswith("dagbag.py") for fn, path, *_ in frames)


def retained_bytes(bin_path: Path) -> dict:
    """Bytes still allocated when the tracker closed: in total and under the bag's load path."""
    import memray

    total = under = 0
    with memray.FileReader(str(bin_path), report_progress=False) as reader:
        peak = reader.metadata.peak_memory
        for rec in reader.get_leaked_allocation_records(merge_threads=True):
            total += rec.size
            try:
                frames = rec.stack_trace()
            except Exception:
                frames = []
            if under_load_path(frames):
                under += rec.size
    return {"retained_total": total, "retained_under_load_path": under, "peak_memory": peak}


def render(bin_path: Path, outdir: Path, timeout: float = 600, python: str = sys.executable) -> dict[str, bool]:
    """Flamegraphs (peak and retained at exit), ``memray stats`` and ``memray summary`` text, by
    ``python``'s memray (the one that wrote the file, for another environment's scheduler)."""
    mem = [python, "-m", "memray"]
    jobs = {
        "memray-flamegraph.html": mem + ["flamegraph", "-f", "-o", str(outdir / "memray-flamegraph.html"), str(bin_path)],
        "memray-flamegraph-leaks.html": mem + ["flamegraph", "--leaks", "-f", "-o", str(outdir / "memray-flamegraph-leaks.html"), str(bin_path)],
        "memray-stats.txt": mem + ["stats", str(bin_path)],
        "memray-summary.txt": mem + ["summary", str(bin_path)],
    }
    ok = {}
    for name, cmd in jobs.items():
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, "COLUMNS": "200", "TERM": "dumb"})
        ok[name] = r.returncode == 0
        if name.endswith(".txt"):
            (outdir / name).write_text(r.stdout + (r.stderr if r.returncode else ""))
        elif r.returncode:
            (outdir / f"{name}.err").write_text(r.stdout + r.stderr)
    return ok
