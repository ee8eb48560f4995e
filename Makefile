# Two commands on a fresh machine: `make demo` and `make test`. Both bootstrap uv (with pip),
# build .venv from uv.lock, then run. Nothing else needs installing by hand.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(PYTHON) -m uv
export UV_PYTHON_DOWNLOADS := never
RUN := $(UV) run --frozen --no-sync

.PHONY: setup demo test lint bench mlflow-ui clean

.venv/.synced: uv.lock pyproject.toml
	@$(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) sync --frozen
	@touch $@

setup: .venv/.synced

demo: setup
	$(RUN) decisioning demo

lint: setup
	$(RUN) ruff check .

test: setup lint
	$(RUN) pytest

bench: setup
	$(RUN) python -m bench

mlflow-ui: setup
	$(RUN) mlflow ui --backend-store-uri sqlite:///$${DECISIONING_HOME:-workspace}/mlflow/mlflow.db --port 5000

clean:
	rm -rf .venv workspace .pytest_cache .ruff_cache
