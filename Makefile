# mammo-node: `make serve` runs the node, `make test` runs the whole test suite.
# Both do all their own set-up on a fresh Debian machine (as root): virtual env, pip,
# the Debian packages the tests use (dcmtk, Orthanc, dicom3tools, Chromium), migrations.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON    ?= python3
VENV      ?= .venv
PY        := $(VENV)/bin/python
PIP       := $(VENV)/bin/pip
NODE_CLI  := $(VENV)/bin/mammo-node
DATA_DIR  ?= mammo-data
AE_TITLE  ?= MAMMO_NODE
PORT      ?= 11112
HTTP_PORT ?= 8080
PYTEST_ARGS ?=
# test files run in this many processes (pytest-xdist; a file's tests stay together, so its
# module fixtures are built once): most tests wait on peers, nodes and the viewer, not the CPU
TEST_WORKERS ?= 2
# Debian packages: real DICOM peers and validators for the tests, Chromium for the viewers
APT_PACKAGES := dcmtk orthanc orthanc-dicomweb dicom3tools chromium curl iproute2 util-linux \
                docker-compose prometheus
# the project's shared folder: ../shared beside the repository (else this workplace's)
SHARED ?= $(firstword $(wildcard $(abspath ../shared) /work/shared) $(abspath ../shared))
OHIF_CHECK := $(SHARED)/tools/ohif-check

.PHONY: help serve test test-slow lint venv apt viewer-tools bench-ingest bench-pipeline device-wheels clean-data

help:
	@echo "make serve   - run mammo-node (SQLite + storage in $(DATA_DIR), DICOM port $(PORT))"
	@echo "make test    - install everything the tests need and run the whole suite"
	@echo "make lint    - ruff check + ruff format --check (make test runs it first)"
	@echo "make model-cv     - the documented CPU run: synthetic exams, 5-fold CV, Table 1 (build/model-cv)"
	@echo "make demo-bundle  - export the packaged demo bundle from that run (best fold)"
	@echo "make demo-calibrate - calibrate the demo bundle on 240 fresh synthetic exams (seed 23)"
	@echo "make bench-ingest | bench-model | bench-pipeline | bench-web | bench-train - benchmarks (print figures)"
	@echo "make fuzz | soak - hostile input: coverage-guided fuzzing, a soak under faults"
	@echo "make device-wheels - the wheels scripts/device_checks.sh needs on a lent GPU machine"

# --- set-up ------------------------------------------------------------------------------
$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q python3 python3-venv python3-pip; }
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { apt-get update -q && apt-get install -y -q python3-venv && $(PYTHON) -m venv $(VENV); }
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]'
	@touch $@

venv: $(VENV)/.installed

apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	command -v npm >/dev/null 2>&1 || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

viewer-tools: apt
	@if [ -d "$(OHIF_CHECK)" ]; then bash $(OHIF_CHECK)/setup.sh; \
	else echo "ohif-check not found at $(OHIF_CHECK): viewer tests will fail"; fi

# --- the two commands ----------------------------------------------------------------------
serve: venv  # serve applies the database migrations itself before it listens
	exec $(NODE_CLI) serve --data-dir $(DATA_DIR) --ae-title $(AE_TITLE) --port $(PORT) --http-port $(HTTP_PORT)

test: venv apt viewer-tools lint
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-slow: venv apt viewer-tools
	$(PY) -m pytest --run-slow $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check mammo_node trainer tests scripts alembic
	$(VENV)/bin/ruff format --check mammo_node trainer tests scripts alembic

# --- benchmarks ----------------------------------------------------------------------------
BENCH_INGEST_ARGS ?=  # e.g. --associations 4 --repeats 2 --scoring-bundle demo
bench-ingest: venv apt
	$(PY) scripts/bench_ingest.py $(BENCH_INGEST_ARGS)

# e.g. BENCH_PIPELINE_ARGS="--device cuda --precision bf16 --batch 1,4,8" on a GPU machine,
# "--stages" for the model-free stages with CPU seconds
BENCH_PIPELINE_ARGS ?=
bench-pipeline: venv apt
	$(PY) scripts/bench_pipeline.py $(BENCH_PIPELINE_ARGS)

# the GPU checks run on a lent GPU machine (device tool: `bash scripts/device_checks.sh`,
# carry .whl): this downloads the wheels its image lacks, once, here
device-wheels: venv
	PIP="$(PY) -m pip" bash scripts/device_wheels.sh

clean-data:
	rm -rf $(DATA_DIR)

-include mk/*.mk
