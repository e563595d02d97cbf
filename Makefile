# The two commands: `make demo` runs the main job, `make test` runs the tests.
# Both create (or reuse) .venv from nothing but Python 3.11 and pip.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test lint venv clean-venv benchmarks docs

demo: $(STAMP)
	$(BIN)/workbench demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest tests notebooks --nbval-lax \
	    --nbval-sanitize-with notebooks/sanitize.cfg -p no:cacheprovider $(PYTEST_ARGS)

# The API reference and the notebooks (rendered from their stored outputs, never run);
# warnings are errors. Open docs/_build/html/index.html.
docs: $(STAMP)
	$(BIN)/python -m sphinx -W --keep-going -b html docs docs/_build/html

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

venv: $(STAMP)

# torch first, pinned to the CPU build (a looser requirement pulls gigabytes of CUDA wheels);
# then the package and its test extras with torch held by constraints.txt.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	$(BIN)/python -m pip check
	touch $(STAMP)

benchmarks: $(STAMP)
	$(BIN)/python benchmarks/read_throughput.py

clean-venv:
	rm -rf $(VENV)
