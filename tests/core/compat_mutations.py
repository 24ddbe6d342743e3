"""Hand-made mutations of src/bytecache/cache.py's copy, pickle, cachetools-compatibility and
get_or_load code; each must make the core tests fail. Run from the repository root:

    .venv/bin/python tests/core/compat_mutations.py

It rewrites cache.py once per mutation and restores it afterwards (also on failure).
"""
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
path = ROOT / "src" / "bytecache" / "cache.py"
original = path.read_text()

# (what the mutation breaks, text in cache.py, its replacement)
MUTATIONS = [
    ("policy shared by copies", 'state["_data"], state["_policy"] = copy.deepcopy((self._data, self._policy), memo)',
     'state["_data"], state["_policy"] = copy.deepcopy(self._data, memo), self._policy'),
    ("policy rebuilt by replay", 'state["_data"], state["_policy"] = copy.deepcopy((self._data, self._policy), memo)',
     'state["_data"] = copy.deepcopy(self._data, memo)\n        state["_policy"] = None if self._policy is None else type(self._policy)(self._maxsize or 1)\n        [state["_policy"].add(e) for e in state["_data"].values()] if self._policy is not None else None'),
    ("shallow copy copies values", 'return self._duplicate(deep=False, memo={})', 'return self._duplicate(deep=True, memo={})'),
    ("no __copy__", 'def __copy__(self)', 'def _no_copy(self)'),
    ("copies taken without the lock", 'memo[id(self)] = clone\n        with self._lock:', 'memo[id(self)] = clone\n        if True:'),
    ("pickles taken without the lock", 'self._check_picklable_settings()\n        with self._lock:', 'self._check_picklable_settings()\n        if True:'),
    ("no rebase", 'entry.accessed += shift', 'pass'),
    ("no settings check", 'self._check_picklable_settings()\n', 'pass\n'),
    ("flights carried", '_RUNTIME = frozenset({"_lock", "_flights", "_record_access"})', '_RUNTIME = frozenset({"_lock", "_record_access"})'),
    ("setdefault inherited", 'def setdefault(', 'def _setdefault('),
    ("popitem with context", 'is empty") from None', 'is empty")'),
    ("maxsize 0 refused", 'allow_zero=True)\n', 'allow_zero=False)\n'),
    ("inf refused", 'maxsize == math.inf', 'maxsize == -1'),
    ("waiter shares the leader's error", 'raise _own_copy(flight.error) from flight.error', 'raise flight.error'),
    ("done not in finally", 'finally:\n            flight.done.set()  # whatever happened above, nobody waits forever',
     'except BaseException:\n            if flight.error is not None: flight.done.set()\n            raise\n        flight.done.set()'),
    ("on_evict error raised", 'logger.exception("on_evict raised for key %s (%s)", _short(key), cause.value)', 'raise'),
    ("callback errors not counted", 'self._callback_errors += 1', 'pass'),
    ("loads not shared", 'leading = flight is None', 'leading = True'),
    ("stale not expired on rejection", 'self._evict_expired(self.timer(), evicted)\n                elif', 'pass\n                elif'),
]
failed_to_kill = []
for name, old, new in MUTATIONS:
    assert original.count(old) >= 1, name
    compile(original.replace(old, new, 1), str(path), "exec")  # a mutant must be valid Python
for name, old, new in MUTATIONS:
    path.write_text(original.replace(old, new, 1))
    try:
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                            "tests/core/test_cachetools_compat.py", "tests/core/test_loading.py", "tests/core/test_cache.py",
                            "tests/core/test_bad_input.py"], capture_output=True, text=True, timeout=300, cwd=ROOT)
        killed = r.returncode != 0
        last = [line for line in r.stdout.splitlines() if line.startswith("FAILED")][:1]
    except subprocess.TimeoutExpired:
        killed, last = True, ["timeout"]
    finally:
        path.write_text(original)
    print(("killed  " if killed else "SURVIVED"), name, last)
    if not killed:
        failed_to_kill.append(name)
path.write_text(original)
print("survivors:", failed_to_kill)
sys.exit(1 if failed_to_kill else 0)
