"""Benchmarks for bytecache (not part of the installed package).

Reusable pieces: ``workloads`` (trace loading and generation), ``replay`` (replay a
``(key, weight)`` trace through a cache), ``offline`` (Belady and size-aware offline references),
``libcachesim_ref`` (the same trace through libCacheSim), ``hitpath`` (interleaved timing);
``matrix`` (patterns x budgets x policies, run as ``python -m benchmarks.matrix``) uses them all.
Every script runs from the repository root as a module (``python -m benchmarks.matrix``,
``python -m benchmarks.run``, ...); the tests import them the same way (pyproject's pytest
``pythonpath``).
"""
