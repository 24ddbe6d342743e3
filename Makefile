# The two newcomer commands: `make soak` (the main job) and `make test`. Each installs what it
# needs into ./.venv first (once; again when pyproject.toml changes).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: soak test bench install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[airflow,profiling,bench,dev]'
	# the editable build leaves metadata in the checkout; with the checkout on sys.path (pytest,
	# python -m) Airflow would then find the plugin's entry point twice
	rm -rf bytecache.egg-info
	touch $(STAMP)

install: $(STAMP)

soak: $(STAMP)
	$(PY) -m profiling.soak run --quick

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
