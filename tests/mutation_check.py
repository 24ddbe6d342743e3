"""Hand-made mutations of src/bytecache: the core suite must fail on each one.

Each mutation replaces one exact snippet of one file. They are applied one at a time to a
temporary copy of the tree (never to the working tree), and ``pytest -x -q tests/core`` runs in
the copy with PYTHONPATH pointing at the copy's src. The script exits non-zero if any mutation
survives, if a snippet is not found exactly once (the list went stale: update it) or the mutant
does not compile, or if the unmutated copy does not pass. ``--tests PATH`` runs less than
tests/core, to see what one test file kills on its own.

``--smoke`` checks the end-to-end claims instead: deliberately broken builds of the Airflow
integration (``SMOKE_MUTATIONS``: a gauge that under-counts, a bag that ignores its budget), each
run through the soak smoke test (a real dag-processor and scheduler per configuration, about
4 minutes a run), which must fail on each. The copy then holds the integration and the profiling
package too, and PYTHONPATH puts the copy's ``integration/airflow`` first as well, so the soak's
Airflow subprocesses load the broken plugin.

    .venv/bin/python -m tests.mutation_check            # all of them
    .venv/bin/python -m tests.mutation_check -k ttl     # those whose name contains "ttl"
    .venv/bin/python -m tests.mutation_check --list
    .venv/bin/python -m tests.mutation_check --smoke    # the smoke test against broken builds
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

print = functools.partial(print, flush=True)  # progress shows when the output is a file or pipe
ROOT = Path(__file__).resolve().parent.parent
LIBRARY = Path("src/bytecache")
INTEGRATION = Path("integration/airflow/bytecache_airflow")
COPIED = ("src", "tests/__init__.py", "tests/core", "pyproject.toml")
SMOKE_COPIED = COPIED + ("integration", "profiling", "tests/profiling")
SMOKE_TESTS = "tests/profiling/test_soak_smoke.py"


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str  # relative to ``package``
    original: str
    replacement: str
    description: str
    # The same bug in another version of the code (one branch's rewrite before the lead merges
    # it): used when ``original`` is not found; drop whichever stops matching after the merge.
    alternative: tuple[str, str] | None = None
    package: Path = LIBRARY

    def apply(self, source: str) -> str | None:
        """The mutated source, or None if no snippet is in ``source`` exactly once."""
        pairs = [(self.original, self.replacement)] + ([self.alternative] if self.alternative else [])
        for original, replacement in pairs:
            if source.count(original) == 1:
                return source.replace(original, replacement)
        return None


MUTATIONS = [
    Mutation(
        "over-evict-one-byte", "cache.py",
        "self._policy.evict(self._currsize - self._maxsize)",
        "self._policy.evict(self._currsize - self._maxsize + 1)",
        "the cache asks the policy to free one byte more than the excess",
    ),
    Mutation(
        "tinylfu-admit-always", "policies.py",
        "return all(frequency > self._standing(rival) for rival in rivals)",
        "return True",
        "W-TinyLFU admits every candidate, whatever the sketch says",
    ),
    Mutation(
        "rejected-load-keeps-stale", "cache.py",
        "if self._ttl is not None:  # a stale value under this key goes even so",
        "if False:  # a stale value under this key goes even so",
        "an over-budget get_or_load no longer expires a stale value under its key",
    ),
    Mutation(
        "tinylfu-reweigh-ignores-weight", "policies.py",
        "    def reweigh(self, entry, old_weight: int) -> None:\n        delta = entry.weight - old_weight",
        "    def reweigh(self, entry, old_weight: int) -> None:\n        delta = 0",
        "W-TinyLFU's reweigh ignores the weight change of a value replaced in place",
    ),
    Mutation(
        "no-expire-before-evict", "cache.py",
        "            now = self.timer()\n            self._evict_expired(now, evicted)\n",
        "            now = self.timer()\n",
        "a write no longer expires idle entries before evicting live ones",
    ),
    Mutation(
        "currsize-skew-on-shrink", "cache.py",
        "self._currsize += weight - old_weight\n            self._data.move_to_end(key)",
        "self._currsize += max(weight - old_weight, 0)\n            self._data.move_to_end(key)",
        "replacing a value with a lighter one does not release the difference from currsize",
    ),
    Mutation(
        "ttl-off-by-one", "cache.py",
        "if now - entry.accessed >= ttl:",
        "if now - entry.accessed > ttl:",
        "a read still returns an entry idle for exactly ttl seconds",
    ),
    Mutation(
        "expiry-off-by-one", "cache.py",
        "if now - entry.accessed < ttl:  # type: ignore[operator]",
        "if now - entry.accessed <= ttl:  # type: ignore[operator]",
        "expiry keeps an entry idle for exactly ttl seconds",
    ),
    Mutation(
        "failed-load-keeps-waiters", "cache.py",
        "            flight.error = exc\n            flight.done.set()\n            raise",
        "            flight.error = exc\n            raise",
        "the single-flight leader does not release its waiters when the loader raises",
        # the same bug where h-compat releases them in a finally clause
        alternative=(
            "flight.done.set()  # whatever happened above, nobody waits forever",
            "if flight.error is None:\n                flight.done.set()",
        ),
    ),
    Mutation(
        "write-during-load-loses", "cache.py",
        "        if flight is not None:\n            flight.stale = True\n        entry = self._data.get(key)",
        "        entry = self._data.get(key)",
        "a write of the key while it loads no longer wins over the loaded value",
    ),
    Mutation(
        "same-value-reported-replaced", "cache.py",
        "if entry.value is not value:",
        "if True:",
        "storing the same value again (a new weight) is reported as a replacement",
    ),
    Mutation(
        "peek-marks-used", "cache.py",
        "                return default\n            return entry.value\n\n    def weight_of",
        "                return default\n            self._data.move_to_end(key)\n            return entry.value\n\n"
        "    def weight_of",
        "peek moves the entry to the most recently used end",
    ),
    Mutation(
        "delete-returns-expired", "cache.py",
        "            if entry is None or self._is_expired(entry, self.timer() if self._ttl else 0):\n"
        "                raise KeyError(key)\n            self._unlink(entry)",
        "            if entry is None:\n                raise KeyError(key)\n            self._unlink(entry)",
        "deleting a key whose entry has expired succeeds instead of raising KeyError",
    ),
    Mutation(
        "popitem-most-recent", "cache.py",
        "entry = next(iter(self._data.values()))\n            self._unlink(entry)",
        "entry = next(reversed(self._data.values()))\n            self._unlink(entry)",
        "popitem removes the most recently used item instead of the least",
    ),
    Mutation(
        "load-of-exactly-maxsize-rejected", "cache.py",
        "if self._maxsize is not None and size > self._maxsize:",
        "if self._maxsize is not None and size >= self._maxsize:",
        "get_or_load rejects a value weighing exactly maxsize",
    ),
    Mutation(
        "lru-hit-not-recorded", "policies.py",
        "    def record_access(self, entry) -> None:\n        self._order.move_to_end(entry.key)",
        "    def record_access(self, entry) -> None:\n        pass",
        "the LRU policy ignores hits (evicts in insertion order)",
    ),
    Mutation(
        "lru-evicts-one-short", "policies.py",
        "        while freed < excess and self._order:",
        "        while freed < excess - 1 and self._order:",
        "the LRU policy stops one byte short of the excess",
    ),
    Mutation(
        "tinylfu-protected-weight-kept-on-remove", "policies.py",
        "            del self.protected[entry.key]\n            self.protected_weight -= entry.weight\n",
        "            del self.protected[entry.key]\n",
        "W-TinyLFU forgets to subtract a removed protected entry from the protected segment's weight",
    ),
    Mutation(
        "clear-keeps-policy", "cache.py",
        "            if self._policy is not None:\n                self._policy.clear()",
        "            pass",
        "clear() empties the storage but not the policy's bookkeeping",
    ),
    Mutation(
        "tinylfu-evicts-own-write", "policies.py",
        "                if entry is not self._newest:\n                    return entry",
        "                return entry",
        "W-TinyLFU may pick the entry a write just stored as that write's victim (read-your-writes)",
    ),
    Mutation(
        "tinylfu-undecided-candidates-forgotten", "policies.py",
        "                waiting[entry.key] = entry",
        "                pass",
        "W-TinyLFU counts candidates no write judged as admitted (the coldest resident pays instead)",
    ),
    Mutation(
        "tinylfu-waiting-keeps-removed-entries", "policies.py",
        "            del self.probation[entry.key]\n            self._stop_waiting(entry)\n",
        "            del self.probation[entry.key]\n",
        "W-TinyLFU keeps a removed entry among the waiting candidates (and may evict it again)",
    ),
    Mutation(
        "tinylfu-priors-not-aged", "policies.py",
        "            entry.prior >>= 1",
        "            pass",
        "W-TinyLFU judges a candidate on its count from before the sketch halved",
    ),
    Mutation(
        "shadow-counts-our-hits-for-lru", "shadow.py",
        "            self._trim()\n        self._score(-weight)",
        "            self._trim()\n        self._score(weight)",
        "the shadow LRU scores a hit only the policy made as a win for LRU",
    ),
    Mutation(
        "shadow-never-trims-on-miss", "shadow.py",
        "        if self.weight > self.max_weight:\n            self._trim()\n        if old is None:",
        "        if old is None:",
        "the shadow LRU holds more than the budget after a miss (LRU would hit keys it had dropped)",
    ),
    Mutation(
        "tinylfu-lru-lead-ignored", "policies.py",
        "            if lru_ahead and lru_would_hit:",
        "            if False:",
        "W-TinyLFU never turns to LRU, however far plain LRU leads",
    ),
    Mutation(
        "tinylfu-stuck-in-lru", "policies.py",
        "        return entry.prior > 2 * self.sketch.frequency(coldest.slots)",
        "        return False",
        "W-TinyLFU, once turned to LRU, never weighs its own frequency evidence again",
    ),
    Mutation(
        "tinylfu-hits-not-shown-to-shadow", "policies.py",
        "            self._shadow_keys.move_to_end(entry.key)",
        "            pass",
        "W-TinyLFU's hits leave the shadow LRU's recency order stale",
    ),
    Mutation(
        "tinylfu-shadow-keeps-removed-keys", "policies.py",
        "        self.shadow.discard(entry.key)  # deleted or expired: gone for an LRU too",
        "        pass",
        "a deleted or expired key stays in the shadow LRU (its return counts as LRU's hit)",
    ),
    Mutation(
        "sketch-never-halves", "sketch.py",
        "if self.additions >= self.sample_size:",
        "if False:",
        "the frequency sketch never ages its counts",
    ),
    Mutation(
        'compat-policy-shared-by-copies', "cache.py",
        'state["_data"], state["_policy"] = copy.deepcopy((self._data, self._policy), memo)',
        'state["_data"], state["_policy"] = copy.deepcopy(self._data, memo), self._policy',
        'copy/pickle/cachetools compatibility: policy shared by copies',
    ),
    Mutation(
        'compat-policy-rebuilt-by-replay', "cache.py",
        'state["_data"], state["_policy"] = copy.deepcopy((self._data, self._policy), memo)',
        'state["_data"] = copy.deepcopy(self._data, memo)\n        state["_policy"] = None if self._policy is None else type(self._policy)(self._maxsize or 1)\n        [state["_policy"].add(e) for e in state["_data"].values()] if self._policy is not None else None',
        'copy/pickle/cachetools compatibility: policy rebuilt by replay',
    ),
    Mutation(
        'compat-shallow-copy-copies-values', "cache.py",
        'return self._duplicate(deep=False, memo={})',
        'return self._duplicate(deep=True, memo={})',
        'copy/pickle/cachetools compatibility: shallow copy copies values',
    ),
    Mutation(
        'compat-no-copy', "cache.py",
        'def __copy__(self)',
        'def _no_copy(self)',
        'copy/pickle/cachetools compatibility: no __copy__',
    ),
    Mutation(
        'compat-copies-taken-without-the-lock', "cache.py",
        'memo[id(self)] = clone\n        with self._lock:',
        'memo[id(self)] = clone\n        if True:',
        'copy/pickle/cachetools compatibility: copies taken without the lock',
    ),
    Mutation(
        'compat-pickles-taken-without-the-lock', "cache.py",
        'self._check_picklable_settings()\n        with self._lock:',
        'self._check_picklable_settings()\n        if True:',
        'copy/pickle/cachetools compatibility: pickles taken without the lock',
    ),
    Mutation(
        'compat-no-rebase', "cache.py",
        'entry.accessed += shift',
        'pass',
        'copy/pickle/cachetools compatibility: no rebase',
    ),
    Mutation(
        'compat-no-settings-check', "cache.py",
        'self._check_picklable_settings()\n',
        'pass\n',
        'copy/pickle/cachetools compatibility: no settings check',
    ),
    Mutation(
        'compat-flights-carried', "cache.py",
        '_RUNTIME = frozenset({"_lock", "_flights", "_record_access"})',
        '_RUNTIME = frozenset({"_lock", "_record_access"})',
        'copy/pickle/cachetools compatibility: flights carried',
    ),
    Mutation(
        'compat-setdefault-inherited', "cache.py",
        'def setdefault(',
        'def _setdefault(',
        'copy/pickle/cachetools compatibility: setdefault inherited',
    ),
    Mutation(
        'compat-popitem-with-context', "cache.py",
        'is empty") from None',
        'is empty")',
        'copy/pickle/cachetools compatibility: popitem with context',
    ),
    Mutation(
        'compat-maxsize-0-refused', "cache.py",
        'allow_zero=True)\n',
        'allow_zero=False)\n',
        'copy/pickle/cachetools compatibility: maxsize 0 refused',
    ),
    Mutation(
        'compat-inf-refused', "cache.py",
        'maxsize == math.inf',
        'maxsize == -1',
        'copy/pickle/cachetools compatibility: inf refused',
    ),
    Mutation(
        'compat-waiter-shares-the-leader-s-error', "cache.py",
        'raise _own_copy(flight.error) from flight.error',
        'raise flight.error',
        "copy/pickle/cachetools compatibility: waiter shares the leader's error",
    ),
    Mutation(
        'compat-done-not-in-finally', "cache.py",
        'finally:\n            flight.done.set()  # whatever happened above, nobody waits forever',
        'except BaseException:\n            if flight.error is not None: flight.done.set()\n            raise\n        flight.done.set()',
        'copy/pickle/cachetools compatibility: done not in finally',
    ),
    Mutation(
        'compat-on-evict-error-raised', "cache.py",
        'logger.exception("on_evict raised for key %s (%s)", _short(key), cause.value)',
        'raise',
        'copy/pickle/cachetools compatibility: on_evict error raised',
    ),
    Mutation(
        'compat-callback-errors-not-counted', "cache.py",
        'self._callback_errors += 1',
        'pass',
        'copy/pickle/cachetools compatibility: callback errors not counted',
    ),
    Mutation(
        'compat-loads-not-shared', "cache.py",
        'leading = flight is None',
        'leading = True',
        'copy/pickle/cachetools compatibility: loads not shared',
    ),
]

# Broken builds the end-to-end smoke test must catch: the claims are "the gauge is what the cache
# holds" and "memory stays flat under the budget".
SMOKE_MUTATIONS = [
    Mutation(
        "calibration-measures-half", "weighing.py",
        'kwargs.setdefault("measure", walk_sizeof)',
        'kwargs.setdefault("measure", lambda value: walk_sizeof(value) // 2)',
        "the calibration's deep measurement reads half of each sampled DAG: the model, and so the gauge, under-counts",
        package=INTEGRATION,
    ),
    Mutation(
        "budget-ignored", "dagbag.py",
        "max_bytes if max_bytes else None, ttl=ttl or None",
        "None, ttl=ttl or None",
        "the bag's cache has no byte cap whatever the setting says: memory grows with every version",
        package=INTEGRATION,
    ),
]


def check_snippets(mutations) -> list[str]:
    """What is wrong with each mutation whose snippet is not in the source exactly once or whose
    mutant does not compile."""
    stale = []
    for m in mutations:
        path = ROOT / m.package / m.file
        mutated = m.apply(path.read_text())
        if mutated is None:
            stale.append(f"{m.name}: its snippet is not in {m.package / m.file} exactly once")
            continue
        try:  # a mutant that does not even compile would be "killed" by any suite
            compile(mutated, str(path), "exec")
        except SyntaxError as exc:
            stale.append(f"{m.name}: the mutated {m.package / m.file} does not compile ({exc.msg}, line {exc.lineno})")
    return stale


def copy_tree(destination: Path, parts=COPIED) -> None:
    for part in parts:
        source = ROOT / part
        if source.is_dir():
            shutil.copytree(source, destination / part, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            (destination / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / part)


# pytest -q's closing line, e.g. "1 failed, 128 passed in 9.12s"
SUMMARY = re.compile(r"^\d+ \w+.* in [\d.]+s")


def python_path(copy: Path) -> str:
    """The copy's packages first (the editable install's paths come after PYTHONPATH's)."""
    return os.pathsep.join(str(copy / part) for part in ("src", "integration/airflow"))


def run_suite(copy: Path, tests: str, timeout: float) -> tuple[str, str, float]:
    """Run ``tests`` in ``copy``: ("passed" | "failed" | "timed out", first failure, seconds)."""
    env = dict(os.environ, PYTHONPATH=python_path(copy), PYTHONDONTWRITEBYTECODE="1")
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", tests]
    if tests.startswith("tests/core"):  # where the profile is registered (tests/core/conftest.py)
        command[-1:-1] = ["--hypothesis-profile=mutation-check"]
    started = time.monotonic()
    # Its own session, so a run whose threads hang (a waiter never released) can be ended whole.
    process = subprocess.Popen(command, cwd=copy, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    lines: list[str] = []
    summarized = threading.Event()

    def read() -> None:
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if SUMMARY.match(line):
                summarized.set()
        summarized.set()

    threading.Thread(target=read, daemon=True).start()
    timed_out = not summarized.wait(timeout)
    try:
        # A failed run can leave non-daemon threads blocked forever after pytest has reported.
        process.wait(timeout=0 if timed_out else 10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    seconds = time.monotonic() - started
    if timed_out:
        return "timed out", "", seconds
    if process.returncode == 0:
        return "passed", "", seconds
    failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    return "failed", (failed[0] if failed else (lines[-1] if lines else "no output")), seconds


def imported_from(copy: Path, module: str = "bytecache") -> str:
    env = dict(os.environ, PYTHONPATH=python_path(copy))
    return subprocess.run([sys.executable, "-c", f"import {module}; print({module}.__file__)"],
                          cwd=copy, env=env, capture_output=True, text=True, check=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", dest="pattern", default="", help="only mutations whose name contains this")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--tests", default="tests/core", help="what pytest runs in the copy (default: tests/core)")
    parser.add_argument("--timeout", type=float, default=0, help="seconds per run (default: 5 x the clean run, >= 60)")
    parser.add_argument("--smoke", action="store_true",
                        help=f"the broken integration builds against {SMOKE_TESTS} (slow: minutes per run)")
    args = parser.parse_args(argv)
    if args.smoke and args.tests == "tests/core":
        args.tests = SMOKE_TESTS
    mutations = [m for m in (SMOKE_MUTATIONS if args.smoke else MUTATIONS) if args.pattern in m.name]
    if args.list:
        for m in mutations:
            print(f"{m.name:42} {m.file:12} {m.description}")
        return 0
    stale = check_snippets(mutations)
    for line in stale:
        print(f"STALE   {line}")
    if stale:
        return 2

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bytecache-mutants-") as tmp:
        copy = Path(tmp)
        copy_tree(copy, SMOKE_COPIED if args.smoke else COPIED)
        for module in ("bytecache", "bytecache_airflow") if args.smoke else ("bytecache",):
            where = imported_from(copy, module)
            if not where.startswith(str(copy)):
                print(f"the copy imports {module} from {where}, not from the copy")
                return 2
        verdict, failure, clean_seconds = run_suite(copy, args.tests, timeout=args.timeout or 600)
        print(f"clean copy: {verdict} in {clean_seconds:.1f}s {failure}")
        if verdict != "passed":
            return 2
        timeout = args.timeout or max(60.0, 5 * clean_seconds)
        survivors = []
        for m in mutations:
            path = copy / m.package / m.file
            pristine = path.read_text()
            path.write_text(m.apply(pristine))
            try:
                verdict, failure, seconds = run_suite(copy, args.tests, timeout)
            finally:
                path.write_text(pristine)
            status = "SURVIVED" if verdict == "passed" else "killed"
            if verdict == "passed":
                survivors.append(m.name)
            print(f"{status:8} {m.name:42} {seconds:5.1f}s  {m.description}")
            if verdict != "passed":
                print(f"{'':8} by {failure or verdict}")
    print(f"{len(mutations) - len(survivors)}/{len(mutations)} killed in {time.monotonic() - started:.0f}s"
          + (f"; surviving: {', '.join(survivors)}" if survivors else ""))
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
