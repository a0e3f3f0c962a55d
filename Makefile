# Two entry points for a fresh machine with nothing but python3:
#   make demo   train, evaluate and save a model on the bundled sample
#   make test   the test suite
# Each creates (or reuses) the virtual environment .venv and installs what it needs.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The project with its test tools and the spark extra (pyspark; its tests need Java 17+ and are
# skipped, saying so, where there is none).
# The CPU build of torch, installed before the project so the range in pyproject.toml is
# already satisfied (an unpinned torch would pull a multi-GB CUDA build).
TORCH ?= torch==2.13.0

.PHONY: demo test lint check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,spark]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/recsys train --data data/sample/ratings.csv --output runs/demo/model

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

check: lint test

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache mlflow.db mlruns
