"""Profiling for bytecache's Airflow integration: a scheduler RSS soak under memray, an
in-process DAG-bag churn harness, and scheduler access-trace capture and replay.

Modules that run inside Airflow processes (``bootstrap``) or talk to Airflow's DB (``workload
prepare``, ``dagbag_churn``) import Airflow lazily; the rest is standard library plus psutil and
matplotlib, so the soak's driver process never loads Airflow itself.
"""
