# Two commands from a fresh clone: `make demo` and `make test` (Python 3.11 is all you need).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEV    := $(VENV)/.installed-dev

.PHONY: install install-dev demo test test-fast benchmark clean

# the package and its runtime dependencies (what `make demo` needs)
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --no-compile -e .
	touch $(STAMP)

# + test tools, muon (dsb cross-check), notebook runner, and the scIPENN baseline
$(DEV): $(STAMP)
	$(PY) -m pip install --no-compile -e ".[dev]"
	# sciPENN 0.9.6 pins numba<=0.50 (no Python 3.11 wheels, clashes with scanpy's numba>=0.57), but its code
	# never uses numba, so it is installed without its pins (docs/reproducing.md)
	$(PY) -m pip install --no-compile --no-deps "sciPENN==0.9.6"
	touch $(DEV)

install: $(STAMP)

install-dev: $(DEV)

demo: $(STAMP)
	$(PY) train.py

test: $(DEV)
	WANDB_MODE=offline $(PY) -m pytest -q -ra tests

test-fast: $(DEV)
	WANDB_MODE=offline $(PY) -m pytest -q -ra -m "not slow" tests

benchmark: $(STAMP)
	$(PY) scripts/benchmark.py

clean:
	rm -rf logs outputs multirun .pytest_cache
