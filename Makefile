# The two set-up commands of the README: `make demo` and `make test`.
# Both create or reuse .venv from the pins in requirements.txt.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

DEMO_CHAOS := scale=1@step=40,scale=3@step=80,kill@step=200,scale=2@step=300

demo: $(STAMP)  ## an elastic job on sklearn's digits (embedded Ray, no network) that resizes and survives a SIGKILL
	$(BIN)/elastrain run examples/demo.yaml --chaos "$(DEMO_CHAOS)"

# Test files are spread over TEST_WORKERS processes (each with its own Ray instance); a file's
# tests stay together, as they share module fixtures (a cluster, a venv), and files are handed out
# in the order tests/conftest.py gives them (longest expected first), not by their number of tests.
TEST_WORKERS ?= 2

test: $(STAMP)  ## run the whole test suite (slow tests included) and ruff
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -rs -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

bench: $(STAMP)  ## run every benchmark (minutes; each prints a JSON line and saves it under bench/results/)
	for name in throughput recovery rescale scaleout checkpoint api scheduler cli_startup hostloss tune optimize serve dashboard; do $(BIN)/python -m bench.$$name --save || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
