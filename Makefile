# lithovae: every target installs what it needs into .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
ARGS ?=

.PHONY: install data train test test-slow bench ui clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
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

## MLflow UI over every run in outputs/mlruns.
ui: install
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///outputs/mlruns/mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf outputs/* multirun .pytest_cache
