# The two newcomer commands: `make soak` (the main job) and `make test`. Each installs what it
# needs first (once; again when pyproject.toml changes): ./.venv with Airflow 3.3.2 and, for the
# version matrix, ./.venv-3.1 and ./.venv-3.2 with Airflow 3.1.8 and 3.2.2.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The latest patch of each supported release line: the main venv runs the whole suite on the
# newest, the matrix venvs run MATRIX_TESTS on the others.
AIRFLOW      := 3.3.2
AIRFLOW_3.1  := 3.1.8
AIRFLOW_3.2  := 3.2.2
MATRIX       := 3.1 3.2
# Airflow 3.2.2 does not bound cadwyn, and the newest (9.0, with fastapi 0.165) breaks its
# execution API at import (PydanticUserError: 'TITerminalStatePayload' needs a discriminator
# field), so no dag-processor starts; these are the versions the 3.3.2 install resolves.
PINS_3.2     := 'cadwyn==7.0.0' 'fastapi==0.136.3'
MATRIX_TESTS := tests/airflow tests/profiling/test_soak_smoke.py

.PHONY: soak test test-matrix bench bench-quick bench-table install clean $(MATRIX:%=venv-%)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[airflow,profiling,bench,dev]' 'apache-airflow==$(AIRFLOW)' 'apache-airflow-core==$(AIRFLOW)'
	# the editable build leaves metadata in the checkout; with the checkout on sys.path (pytest,
	# python -m) Airflow would then find the plugin's entry point twice
	rm -rf bytecache.egg-info
	touch $(STAMP)

install: $(STAMP)

# .venv-3.1, .venv-3.2: the project with the extras the matrix tests need, on that Airflow
.venv-%/.installed: pyproject.toml
	test -x .venv-$*/bin/python || $(PYTHON) -m venv .venv-$*
	.venv-$*/bin/python -m pip install --quiet -e '.[airflow,profiling,dev]' 'apache-airflow==$(AIRFLOW_$*)' 'apache-airflow-core==$(AIRFLOW_$*)' $(PINS_$*)
	rm -rf bytecache.egg-info
	touch $@

$(MATRIX:%=venv-%): venv-%: .venv-%/.installed

soak: $(STAMP)
	$(PY) -m profiling.soak run --quick

# = CI (.ci/run): the whole suite on Airflow $(AIRFLOW), then the matrix
test: $(STAMP) $(MATRIX:%=.venv-%/.installed)
	$(PY) -m pytest -q
	$(MAKE) --no-print-directory test-matrix

# the integration tests and the soak smoke test on each other supported release line
test-matrix: $(MATRIX:%=.venv-%/.installed)
	set -e; for minor in $(MATRIX); do \
		echo "== Airflow $$(.venv-$$minor/bin/python -c 'import airflow; print(airflow.__version__)'): $(MATRIX_TESTS)"; \
		.venv-$$minor/bin/python -m pytest -q $(MATRIX_TESTS); \
	done

# the trace matrix (patterns x budgets x policies, table + benchmarks/matrix.png)
bench: $(STAMP)
	$(PY) -m benchmarks.matrix

bench-quick: $(STAMP)
	$(PY) -m benchmarks.matrix --quick --plot /tmp/bytecache-matrix-quick.png

# the hit-path table and the older weighted/LIRS table
bench-table: $(STAMP)
	$(PY) -m benchmarks.run

clean:
	rm -rf $(VENV) $(MATRIX:%=.venv-%) build *.egg-info src/*.egg-info
