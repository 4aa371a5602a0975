# Two commands on a fresh machine with nothing but Python:
#   make run   - set up .venv and run the default scenario suite (writes reports/)
#   make test  - set up .venv and run the whole test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# pytest workers: CI has 2 cores; the suite is ~20 CPU-minutes, half of it waiting on loopback servers
TEST_JOBS ?= 2
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck bench clean setup

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m harness.cli run --suite default --out reports/latest

# the Ray tests (tests/unit/test_distributed_*.py) skip without it; CI installs it here (~70 s, 285 MB)
RAY_STAMP := $(VENV)/.installed-ray
$(RAY_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,ray]'
	touch $(RAY_STAMP)

test: $(STAMP) $(RAY_STAMP) lint typecheck
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist worksteal --durations=15

lint: $(STAMP)
	$(VENV)/bin/ruff check harness reference_impl tests bench
	$(VENV)/bin/ruff format --check harness reference_impl tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
