# Two commands set everything up on a fresh machine: `make bench` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: test bench install lock clean

# requirements.lock pins every package to the version the suite was run with
# (pinned environments are what reproductions break on first); setup.cfg keeps
# only lower bounds, for installing seqbench into another environment.
$(STAMP): setup.cfg pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# PyTorch joins when it can be installed: `bench` adds its baselines (cuDNN
# LSTM, a PyTorch TCN), `test` its reference checks (the word LM's training
# steps against a PyTorch model of the authors' code, the baselines' timing).
# The pinned version is the CPU build this project's machines hold locally; set
# BENCH_TORCH= or TEST_TORCH= (empty) to skip it, or another spec to use another.
BENCH_TORCH ?= torch==2.13.0
TEST_TORCH ?= $(BENCH_TORCH)
BENCH_ARGS ?= --suite default
# $(call optional_torch,SPEC,what is missing without it)
optional_torch = if [ -n "$(1)" ]; then $(PY) -c "import torch" 2>/dev/null || \
  $(PY) -m pip install --quiet "$(1)" || echo "torch not installed: $(2)"; fi

test: $(STAMP)
	@$(call optional_torch,$(TEST_TORCH),the PyTorch reference tests are skipped)
	$(PY) -m pytest -q -ra -n 2 --durations=15 tests

bench: $(STAMP)
	@$(call optional_torch,$(BENCH_TORCH),no PyTorch baselines)
	$(PY) -m seqbench bench $(BENCH_ARGS) --out benchmarks/results/local

# Rewrite requirements.lock from .venv (after upgrading a package on purpose).
lock: $(STAMP)
	@{ sed -n '/^#/p' requirements.lock; $(PY) -m pip freeze --exclude-editable; } > requirements.lock.tmp
	mv requirements.lock.tmp requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache
