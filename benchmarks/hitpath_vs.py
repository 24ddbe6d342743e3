"""Hit path of the working tree's ByteCache beside an earlier commit's, interleaved in one run.

    .venv/bin/python -m benchmarks.hitpath_vs BASE_REVISION [--rounds 40]

Both versions are timed in the same rounds (``hitpath.measure``), so the ratio "working tree / base"
is meaningful on a shared machine where absolute nanoseconds are not. A change that claims to leave
the hit path alone should show ratios around 1.0 in the median column.
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import subprocess
import sys
import tarfile
import tempfile

import bytecache

from . import hitpath

ROOT = pathlib.Path(__file__).resolve().parents[1]
VARIANTS = [("lru", None), ("lru", 3600.0), ("tinylfu", None), ("tinylfu", 3600.0)]


def import_revision(revision: str, into: pathlib.Path):
    """``src/bytecache`` as of ``revision``, imported under another name."""
    archive = into / "src.tar"
    archive.write_bytes(subprocess.run(["git", "archive", revision, "src/bytecache"], cwd=ROOT, check=True,
                                       capture_output=True).stdout)
    with tarfile.open(archive) as tar:
        try:
            tar.extractall(into, filter="data")
        except TypeError:  # Python before 3.10.12 / 3.11.4: no extraction filters (our own archive)
            tar.extractall(into)
    package = into / "src" / "bytecache"
    spec = importlib.util.spec_from_file_location("bytecache_base", package / "__init__.py",
                                                  submodule_search_locations=[str(package)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["bytecache_base"] = module
    spec.loader.exec_module(module)
    return module


def warm_get(module, policy: str, ttl: float | None, keys: list):
    cache = module.ByteCache(10**9, ttl=ttl, policy=policy)
    for key in keys:
        cache[key] = key
    return cache.get


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base", help="a git revision, e.g. main or a commit")
    ap.add_argument("--rounds", type=int, default=40)
    args = ap.parse_args()
    keys = list(range(1000))
    with tempfile.TemporaryDirectory() as tmp:
        base = import_revision(args.base, pathlib.Path(tmp))
        loops = {}
        for policy, ttl in VARIANTS:
            for label, module in (("base", base), ("tree", bytecache)):
                loops[(label, policy, ttl)] = hitpath.make_loop(warm_get(module, policy, ttl, keys), keys)
        result = hitpath.measure(loops, len(keys), rounds=args.rounds)
    print(f"hit path, ns per get on 1000 warm keys, {args.rounds} interleaved rounds; base = {args.base}")
    print("| variant | base (min) | tree (min) | tree/base (min) | base (median) | tree (median) | tree/base (median) |")
    print("|---|---|---|---|---|---|---|")
    for policy, ttl in VARIANTS:
        (b_min, b_med), (t_min, t_med) = result[("base", policy, ttl)], result[("tree", policy, ttl)]
        name = policy + (", ttl" if ttl else "")
        print(f"| {name} | {b_min:.0f} | {t_min:.0f} | {t_min / b_min:.2f} | {b_med:.0f} | {t_med:.0f} | {t_med / b_med:.2f} |")


if __name__ == "__main__":
    main()
