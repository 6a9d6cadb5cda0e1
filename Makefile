# Zero Margin MLOps. `make demo` runs the main job; `make test` runs the tests.
# Every target installs what it needs: uv (from PyPI) and both environments from uv.lock.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV_VERSION := 0.13.8
PYTHON ?= python3.11
UV := $(or $(shell command -v uv 2>/dev/null),$(CURDIR)/.tools/bin/uv)
PIPELINES := .venvs/pipelines
SERVING := .venvs/serving
DELIVERY := .venvs/delivery
PY := $(PIPELINES)/bin/python
ZM_HOME ?= .zm/local
# Nothing leaves the machine: telemetry and usage statistics off everywhere.
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1 DVC_NO_ANALYTICS=1 GX_ANALYTICS_ENABLED=False
# `make ui` and the tests' MLflow servers: no job runner (seven Huey consumers; as charts/zero-margin/templates/configmap.yaml)
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
export FEAST_USAGE=False SCARF_ANALYTICS=false AIRFLOW__CORE__LOAD_EXAMPLES=False OPENBLAS_NUM_THREADS=1
export UV_PYTHON_DOWNLOADS=never

.PHONY: help envs demo test test-topology test-pipelines test-pipelines-integration test-pipelines-rest test-serving test-all lint bench serve ui clean repro real-data airflow generate drills stack stack-down

help: ## list targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(CURDIR)/.tools/bin/uv:
	$(PYTHON) -m venv .tools && .tools/bin/pip install -q uv==$(UV_VERSION)

# One lock, two environments (kserve needs psutil<6, Airflow 3 needs psutil>=6.1). Bytecode is
# compiled at install: without it every process spends 15-35 s compiling imports here.
$(PIPELINES)/.synced: uv.lock pyproject.toml | $(UV)
	UV_PROJECT_ENVIRONMENT=$(PIPELINES) $(UV) sync --frozen --group pipelines --python $(PYTHON) --compile-bytecode
	@touch $@
$(SERVING)/.synced: uv.lock pyproject.toml | $(UV)
	UV_PROJECT_ENVIRONMENT=$(SERVING) $(UV) sync --frozen --group serving --group serving-tests --python $(PYTHON) --compile-bytecode
	@touch $@

# Tools only (helm SDK, kubernetes-validate, checkov): no project code, checkov cannot share with Airflow.
$(DELIVERY)/.synced: uv.lock pyproject.toml | $(UV)
	UV_PROJECT_ENVIRONMENT=$(DELIVERY) $(UV) sync --frozen --only-group delivery --no-install-project --python $(PYTHON) --compile-bytecode
	@touch $@

envs: $(PIPELINES)/.synced $(SERVING)/.synced $(DELIVERY)/.synced ## create the environments from uv.lock

demo: envs ## run the main job on the embedded local stack (state in .zm/demo, reset each run)
	rm -rf .zm/demo
	ZM_HOME=.zm/demo $(PIPELINES)/bin/python -m demos

# Three runs, one per environment: pipelines (most tests), serving (real KServe servers), delivery
# (the Helm chart rendered with Helm's Go SDK, kubernetes-validate, the KServe CRD, checkov).
# The Kubernetes topology (stack/, tests/stack) runs real PostgreSQL, Redis, git, Prometheus and Alertmanager.
STACK_OS_PACKAGES := /usr/lib/postgresql/*/bin/initdb:postgresql redis-server:redis-server git:git \
	prometheus:prometheus prometheus-alertmanager:prometheus-alertmanager prometheus-pushgateway:prometheus-pushgateway
TEST_OS_PACKAGES := wrk:wrk promtool:prometheus haproxy:haproxy chromium:chromium $(STACK_OS_PACKAGES)
# The topology's loop spends most of its time waiting on schedulers, scrapes and alert timers, so the three
# runs go side by side (each run's output is printed whole when it ends).
test: envs ## run the test suite (slow end-to-end tests in their short form)
	$(call debian,$(TEST_OS_PACKAGES))
	$(MAKE) --no-print-directory -j4 --output-sync=target test-topology test-pipelines-integration \
	  test-pipelines-rest test-serving

test-topology: envs ## the whole loop in the Kubernetes topology, short form (part of make test)
	$(PY) -m pytest -m stack -q tests/stack

# The topology's loop gets the CPU first: the other runs yield it to the loop (nice), filling its waits;
# the pipelines tests run as two processes (--shard, tests/conftest.py). Measured: all four end within about 2 minutes
# of each other, so make test is bound by the total CPU work, not by one run.
PIPELINES_TESTS := -m "not serving and not charts and not full and not stack" -q --ignore=tests/charts --ignore=tests/serving
test-pipelines: envs ## unit, integration, DAG and observability tests, in one process
	$(PY) -m pytest $(PIPELINES_TESTS)
test-pipelines-integration: envs
	nice -n 10 $(PY) -m pytest $(PIPELINES_TESTS) --shard integration
test-pipelines-rest: envs
	nice -n 10 $(PY) -m pytest $(PIPELINES_TESTS) --shard rest

test-serving: envs ## real KServe servers, then the chart (part of make test)
	nice -n 10 $(SERVING)/bin/python -m pytest -m "serving and not full" -q tests/serving
	$(DELIVERY)/bin/python -m pytest --noconftest -m charts -q tests/charts

test-all: envs ## every test, slow ones at full size
	$(call debian,$(TEST_OS_PACKAGES))
	ZM_FULL=1 $(PY) -m pytest -m "not serving and not charts" -q --ignore=tests/charts --ignore=tests/serving
	ZM_FULL=1 $(SERVING)/bin/python -m pytest -m serving -q tests/serving
	$(DELIVERY)/bin/python -m pytest --noconftest -m charts -q tests/charts

generate: envs ## regenerate the chart's values schema, Prometheus rules and Grafana dashboards
	$(DELIVERY)/bin/python charts/values_schema.py charts/zero-margin
	$(PY) -m monitoring.rules
	$(PY) -m dashboards.generate

lint: envs ## ruff and mypy (serving code checked in the serving environment)
	$(PIPELINES)/bin/ruff check .
	$(PIPELINES)/bin/mypy
	$(SERVING)/bin/mypy --strict --ignore-missing-imports --follow-imports=silent inference_services

REAL_FILE ?= ../shared/data/online_retail_ii/online_retail_II_2009_2010.parquet
REAL_TUNING_SECONDS ?= 300
real-data: envs ## train the three families on the real UCI file (last 8 weeks held out), then tuned; cards -> docs/model-cards/real-data
	rm -rf .zm/real
	ZM_HOME=.zm/real $(PIPELINES)/bin/zm data ingest $(REAL_FILE)
	ZM_HOME=.zm/real $(PIPELINES)/bin/zm train --reason real-data
	ZM_HOME=.zm/real ZM_TUNING__BUDGET_SECONDS=$(REAL_TUNING_SECONDS) $(PIPELINES)/bin/zm train --tune \
	  --reason "real-data, tuned"
	ZM_HOME=.zm/real $(PIPELINES)/bin/zm models --alias latest --cards docs/model-cards/real-data

# Debian packages a target needs, installed when their command (or a file matching a pattern) is missing:
# $(call debian,command:package ...)
define debian
	@missing=""; for pair in $(1); do command -v $${pair%%:*} >/dev/null || compgen -G "$${pair%%:*}" >/dev/null \
	  || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi
endef

bench: envs ## benchmarks; figures as ratios against baselines run in the same session
	$(call debian,wrk:wrk $(STACK_OS_PACKAGES))
	PYTHONPATH=$(CURDIR) ZM_HOME=.zm/bench $(PIPELINES)/bin/python -m benchmarks --out docs/benchmarks.json

drills: envs ## rollout drills under load (canary, rollback, replica loss) on HAProxy; figures -> docs/drills.json
	$(call debian,haproxy:haproxy)
	ZM_HOME=.zm/drills $(PIPELINES)/bin/zm rollout drills --out docs/drills.json

serve: envs ## serve the three production models on 127.0.0.1 (ports 8081-8083); Ctrl-C stops them
	@test -f $(ZM_HOME)/mlflow.db || { echo "no models under $(ZM_HOME): run 'make demo' and 'make serve ZM_HOME=.zm/demo'"; exit 2; }
	ZM_HOME=$(ZM_HOME) $(SERVING)/bin/zm-serve

stack: envs ## the Kubernetes profile on this machine: every workload of the chart, Airflow, PostgreSQL, S3, ... (root)
	$(call debian,$(STACK_OS_PACKAGES))
	$(PY) -m stack up

stack-down: ## stop everything `make stack` started (its data stays in .zm/stack until `make clean`)
	@test -x $(PY) && $(PY) -m stack down || true

airflow: envs ## Airflow standalone (UI and API on 127.0.0.1:8080) over ZM_HOME's state until Ctrl-C
	ZM_HOME=$(ZM_HOME) $(PIPELINES)/bin/python -m demos --airflow-only

ui: envs ## the analysts' Evidently UI on 127.0.0.1:8000 (monitoring over time) and the MLflow UI on :5000
	@echo "Evidently UI (one project per model, a snapshot per monitoring check): http://127.0.0.1:8000"
	@echo "MLflow UI (runs, registry, model cards):                            http://127.0.0.1:5000"
	ZM_HOME=$(ZM_HOME) $(PIPELINES)/bin/zm ui --port 8000 & \
	trap 'kill $$!' EXIT INT TERM; \
	$(PIPELINES)/bin/mlflow ui --host 127.0.0.1 --port 5000 --backend-store-uri sqlite:///$(ZM_HOME)/mlflow.db

clean: ## remove environments and local state
	rm -rf .venvs .tools .zm

repro: envs ## run the dvc.yaml pipeline (only changed stages run)
	PATH=$(CURDIR)/$(PIPELINES)/bin:$$PATH ZM_HOME=$(ZM_HOME) $(PIPELINES)/bin/dvc repro
