"""Record the threads of a process at each of its ``os.fork()`` calls: a diagnostic, loaded by
putting this directory on ``PYTHONPATH`` (Python imports ``sitecustomize`` at start-up).

With ``BYTECACHE_FORK_PROBE`` set to a file, every fork in every process that inherits the
environment appends one JSON line: the forking pid, the Python threads by name, the OS threads
by ``comm`` name (Python 3.12+ counts these -- ``/proc/self/stat`` -- when it decides whether to
warn "This process ... is multi-threaded, use of fork() may lead to deadlocks in the child"),
and the functions that called ``fork``. Registered at start-up, its hook runs after every
``before`` hook registered later (CPython calls them in reverse order), so it sees what is left
running at the fork itself.
"""

import json
import os
import sys
import threading
import traceback

_PATH = os.environ.get("BYTECACHE_FORK_PROBE")


def _os_threads() -> list[str]:
    names = []
    for tid in sorted(os.listdir("/proc/self/task")):
        try:
            with open(f"/proc/self/task/{tid}/comm") as comm:
                names.append(comm.read().strip())
        except OSError:
            continue  # exited meanwhile
    return names


def _record() -> None:
    line = {
        "pid": os.getpid(),
        "argv": sys.argv[:3],
        "python_threads": sorted(t.name for t in threading.enumerate()),
        "os_threads": _os_threads(),
        "caller": [frame.name for frame in traceback.extract_stack()[-12:-1]],
    }
    with open(_PATH, "a") as out:
        out.write(json.dumps(line) + "\n")


if _PATH and hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_record)
