# lithovae: every target installs what it needs into .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
ARGS ?=
# `make server`: a local MLflow tracking server (SERVER_STORE: its database; a
# postgresql+psycopg://user@host/db URI installs the postgres extra first)
SERVER_PORT ?= 5001
SERVER_DIR ?= outputs/mlflow-server
SERVER_STORE ?= sqlite:///$(CURDIR)/$(SERVER_DIR)/mlflow.db

.PHONY: install data train test test-slow bench ui server clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --no-compile -c constraints.txt -e '.[dev]'
	@# the bytecode pip would compile on one core, compiled on every core (~35 s less on two) and
	@# not for the packages' own test suites (a quarter of the files, never imported by a run);
	@# a file written for another Python version fails here as it does, ignored as pip ignores it
	$(PY) -m compileall -qq -j 0 -x '/tests?/' $(VENV)/lib || true
	touch $(STAMP)

## Build the embedded default dataset (synthetic LILY) and print its realism report.
data: install
	$(PY) -m lithovae.data $(ARGS)

## The main job: train the default model on the embedded default dataset.
train: install
	$(PY) -m lithovae.train $(ARGS)

## Fast test suite (small synthetic scale).
test: install
	$(PY) -m pytest -m "not slow" -q $(ARGS)

## Slow tests: default-scale data and longer trainings.
test-slow: install
	$(PY) -m pytest -m slow -q $(ARGS)

bench: install
	$(PY) benchmarks/bench_train.py $(ARGS)

## MLflow UI over every run in outputs/mlruns: prints each experiment's runs page, one worker.
ui: install
	$(PY) -m lithovae.ui --store sqlite:///outputs/mlruns/mlflow.db --port 5000

## A tracking server for runs from anywhere on this machine: logger.tracking_uri=http://127.0.0.1:$(SERVER_PORT)
## (or MLFLOW_TRACKING_URI). Database: $(SERVER_STORE); artifacts served from $(SERVER_DIR)/artifacts.
server: install
	@case '$(SERVER_STORE)' in postgresql*) $(PY) -m pip install -q -c constraints.txt -e '.[dev,postgres]';; esac
	mkdir -p $(SERVER_DIR)/artifacts
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false PATH=$(CURDIR)/$(VENV)/bin:$$PATH \
		$(VENV)/bin/mlflow server --host 127.0.0.1 --port $(SERVER_PORT) --backend-store-uri '$(SERVER_STORE)' \
		--workers 1 --serve-artifacts --artifacts-destination $(CURDIR)/$(SERVER_DIR)/artifacts

clean:
	rm -rf outputs/* multirun .pytest_cache
