# Two commands from a fresh clone: `make demo` and `make test` (Python 3.11 is all you need).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast benchmark clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --no-compile -e ".[dev]"
	# scIPENN baseline: sciPENN 0.9.6 pins numba<=0.50 (no Python 3.11 wheels, clashes with scanpy's numba>=0.57),
	# but its code never uses numba, so it is installed without its pins (docs/reproducing.md)
	$(PY) -m pip install --no-compile --no-deps "sciPENN==0.9.6"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) train.py

test: $(STAMP)
	WANDB_MODE=offline $(PY) -m pytest -q -ra tests

test-fast: $(STAMP)
	WANDB_MODE=offline $(PY) -m pytest -q -ra -m "not slow" tests

benchmark: $(STAMP)
	$(PY) scripts/benchmark.py

clean:
	rm -rf logs outputs multirun .pytest_cache
