# Two entry points a fresh machine needs: `make run` and `make test`.
# Each creates the virtual environment when missing and installs torch first
# (see constraints.txt for why torch is pinned separately).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stabprobe-installed
OUT ?= runs
ARGS ?=

.PHONY: install run test demo-models clean-venv

$(STAMP): pyproject.toml constraints.txt setup.py harness/score/metrics/_levtraj.c
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/stabprobe run --out $(OUT) $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

# Speed benchmarks against the targets of issue 9 (about 2 minutes on 2 cores; exits 1 if a target is missed).
.PHONY: bench
bench: $(STAMP)
	$(PY) -m benchmarks.run $(ARGS)

# Retrains the committed demo models (never run in CI; about 10 minutes on 2 cores).
demo-models: $(STAMP)
	$(PY) -m harness.demo.train --model all --out models

clean-venv:
	rm -rf $(VENV)
