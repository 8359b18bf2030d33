# make run [ARGS="model=ann optimizer=adam"]   train, evaluate and record one job (or a sweep: ARGS="-m ...")
# make test                                   lint, format check and the fast tier (in-process tests)
# make test-all                               lint, format check and every test (what CI runs)
# make ui                                     MLflow's UI on http://127.0.0.1:5000 (prints each experiment's runs view)
# make serve [MODEL=models:/mnist-classifier@champion]   the model as a REST service on 127.0.0.1:5001
# make draw [MODEL=...]                       a page to draw a digit on, on http://127.0.0.1:8000
# run, ui, serve and draw install what running needs (`pip install -e .`); test adds the `test`
# extra (pytest, ruff, httpx2), test-all the `dev` extra (PostgreSQL driver, Playwright, Ray).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# One stamp per layer: going from run to test installs only the test extra.
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
DEV_STAMP := $(VENV)/.installed-dev
ARGS ?=
UI_PORT ?= 5000
SERVE_PORT ?= 5001
DRAW_PORT ?= 8000
MODEL ?= models:/mnist-classifier@champion
# The store `make run` records into, unless MLFLOW_TRACKING_URI says another.
STORE := $(or $(MLFLOW_TRACKING_URI),sqlite:///$(CURDIR)/mlflow.db)
PYTEST_ARGS ?=
# Test processes side by side (pytest-xdist): one a core, at most 4 (each holds its own Keras).
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 4 ] && n=4; echo $$n)

# The shared datasets beside the checkout, when present; otherwise the loader's own
# search (PIPELINE_DATA_DIR, the cache, then the public mirrors).
ifneq ($(wildcard ../shared/datasets/mnist),)
export PIPELINE_DATA_DIR ?= $(abspath ../shared/datasets)
endif

.PHONY: run test test-all lint ui serve draw clean

$(RUN_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(TEST_STAMP): $(RUN_STAMP)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

$(DEV_STAMP): $(TEST_STAMP)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

run: $(RUN_STAMP)
	$(PY) -m pipeline $(ARGS)

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The fast tier is pytest's default selection (pyproject.toml): not `cli`, `slow` or `system`.
test: lint
	$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

test-all: $(DEV_STAMP) lint
	$(PY) -m pytest -m "" -n $(TEST_WORKERS) $(PYTEST_ARGS)

# Each server's port is checked first: a busy one is one `error:` line, and nothing starts.
ui: $(RUN_STAMP)
	@$(PY) -m pipeline.cli.port 127.0.0.1 $(UI_PORT) UI_PORT ui
	MLFLOW_TRACKING_URI=sqlite:///$(CURDIR)/mlflow.db $(PY) -m pipeline.cli.ui http://127.0.0.1:$(UI_PORT)
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port $(UI_PORT)

# `mlflow models serve` starts uvicorn from PATH: the venv's bin goes first.
serve: $(RUN_STAMP)
	@$(PY) -m pipeline.cli.port 127.0.0.1 $(SERVE_PORT) SERVE_PORT serve
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" MLFLOW_TRACKING_URI="$(STORE)" $(VENV)/bin/mlflow models serve -m "$(MODEL)" --env-manager local --host 127.0.0.1 --port $(SERVE_PORT)

draw: $(RUN_STAMP)
	@$(PY) -m pipeline.cli.port 127.0.0.1 $(DRAW_PORT) DRAW_PORT draw
	MLFLOW_TRACKING_URI="$(STORE)" $(PY) -m pipeline.predict --serve "$(MODEL)" --port $(DRAW_PORT)

clean:
	rm -rf outputs multirun .pytest_cache .ruff_cache
