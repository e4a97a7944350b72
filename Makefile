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

test: $(STAMP)
	$(PY) -m pytest -q -ra -n 2 --durations=15 tests

# PyTorch baselines (cuDNN LSTM, a PyTorch TCN) join the run when torch is
# importable. The pinned version is the CPU build this project's machines hold
# locally; set BENCH_TORCH= (empty) to skip it, or another spec to use another.
BENCH_TORCH ?= torch==2.13.0
BENCH_ARGS ?= --suite default

bench: $(STAMP)
	@if [ -n "$(BENCH_TORCH)" ]; then $(PY) -c "import torch" 2>/dev/null || \
	  $(PY) -m pip install --quiet "$(BENCH_TORCH)" || echo "torch not installed: no PyTorch baselines"; fi
	$(PY) -m seqbench bench $(BENCH_ARGS) --out benchmarks/results/local

# Rewrite requirements.lock from .venv (after upgrading a package on purpose).
lock: $(STAMP)
	@{ sed -n '/^#/p' requirements.lock; $(PY) -m pip freeze --exclude-editable; } > requirements.lock.tmp
	mv requirements.lock.tmp requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache
