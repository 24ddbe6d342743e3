"""Benchmarks for bytecache (not part of the installed package).

Reusable pieces: ``workloads`` (trace loading and generation), ``replay`` (replay a
``(key, weight)`` trace through a cache), ``offline`` (Belady and size-aware offline references),
``libcachesim_ref`` (the same trace through libCacheSim), ``hitpath`` (interleaved timing);
``matrix`` (patterns x budgets x policies, run as ``python -m benchmarks.matrix``) uses them all.
Each module is self-contained, so both ``from benchmarks.replay import replay`` (from the
repository root) and ``import replay`` (with ``benchmarks/`` on ``sys.path``, as ``run.py`` does) work.
"""
