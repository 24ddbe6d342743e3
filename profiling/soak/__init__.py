"""The scheduler soak: does the real ``airflow scheduler``'s RSS stay flat under DAG-version churn?

    python -m profiling.soak run --quick          # CI-sized: ~10 minutes, runs (a), (r), (c)
    python -m profiling.soak run --minutes 30     # a soak: every configuration 30 minutes
    python -m profiling.soak report DIR           # re-render a saved report from its results.json

* :mod:`~profiling.soak.model` -- the spec and the per-run records (``results.json``);
* :mod:`~profiling.soak.analysis` -- statistics and the verdict (the criterion, stated once);
* :mod:`~profiling.soak.runner` -- processes, sampling, statsd;
* :mod:`~profiling.soak.report` -- markdown, CSV and plot, from the records alone;
* :mod:`~profiling.soak.cli` -- the two commands.
"""
