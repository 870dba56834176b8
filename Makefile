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

demo: $(STAMP)  ## train the demo job on sklearn's digits, embedded, no network
	$(BIN)/elastrain run examples/demo.yaml

test: $(STAMP)  ## run the whole test suite (slow tests included) and ruff
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -rs

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
