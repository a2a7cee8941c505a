# The README's commands. Everything runs inside ./.venv, created on first use.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
CHURN := $(VENV)/bin/churn
export BENTOML_HOME ?= $(CURDIR)/.churn/bentoml
export BENTOML_DO_NOT_TRACK := true
export MLFLOW_ENABLE_TELEMETRY := false
DATA := .churn/data/customers.csv
CONTRACT := configs/streaming_churn.contract.yaml
PORT ?= 3000

.PHONY: setup lock upgrade monitor-deps postgres-deps image-deps bench-deps demo train serve score bento image bench bench-workers drift retrain-check monitor drill mlflow k8s k8s-scan test test-unit lint clean

# Exactly the versions in uv.lock (--locked fails if pyproject.toml changed without `make lock`),
# so a new release upstream cannot change what CI or the demo runs.
$(VENV)/.installed: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet "uv>=0.4,<1"
	uv sync --quiet --locked --extra test --python 3.11
	@touch $@

setup: $(VENV)/.installed  ## create the environment from uv.lock (idempotent)

lock:  ## re-resolve uv.lock after editing dependencies (keeps locked versions that still fit)
	uv lock
	$(PY) -m service.bento_pins

upgrade:  ## the one deliberate upgrade: newest versions within pyproject's ranges; then make test
	uv lock --upgrade
	$(PY) -m service.bento_pins
	@echo "uv.lock upgraded: review 'git diff uv.lock', run make test, commit both"

monitor-deps:  ## Prometheus, promtool and the Pushgateway (Debian packages) when missing
	@if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus-pushgateway >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq prometheus prometheus-pushgateway >/dev/null; \
	fi

postgres-deps:  ## PostgreSQL server binaries (Debian package) when missing: tests, `make mlflow`
	@if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql >/dev/null; \
	fi

bench-deps:  ## wrk (Debian package) when missing: the benchmarks' load generator (bench/wrk.py)
	@if ! command -v wrk >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq wrk >/dev/null; \
	fi

image-deps:  ## podman, runc and debootstrap (Debian packages) when missing: the image build and tests
	@if ! command -v podman >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq podman runc debootstrap >/dev/null; \
	fi

demo: setup  ## generate data, validate, train, register, promote, then serve the champion
	$(CHURN) generate --output $(DATA)
	$(CHURN) validate --data $(DATA) --contract $(CONTRACT)
	$(CHURN) train --data $(DATA) --contract $(CONTRACT) --summary .churn/last_train.json
	$(CHURN) models
	@echo "Serving the champion on http://localhost:$(PORT) (Swagger UI at /, Ctrl-C stops)"
	$(VENV)/bin/bentoml serve service.service:ChurnService --port $(PORT)

train: setup  ## train on $(DATA); promoted only if it beats the champion
	$(CHURN) train --data $(DATA) --contract $(CONTRACT) --summary .churn/last_train.json

serve: setup  ## serve the current champion on $(PORT)
	$(VENV)/bin/bentoml serve service.service:ChurnService --port $(PORT)

score: setup  ## offline batch scoring of $(DATA) with the champion
	$(CHURN) score --input $(DATA) --output .churn/scores.parquet

bento: setup  ## build the Bento (and its Dockerfile) from the champion
	$(VENV)/bin/bentoml build

image: setup image-deps  ## the service image (Bento of the champion, podman); docs/kubernetes-image.md
	k8s/image/build.sh

bench: setup bench-deps  ## serving benchmark with wrk, peers included (bench/serving.py); docs/benchmarks.md
	$(PY) -m bench.serving

bench-workers: setup  ## pod shape: keep-alive connections over 1 vs 2 workers (bench/workers.py)
	$(PY) -m bench.workers

drift: setup  ## drift of the last 24 h of logged inferences against the champion's reference
	$(CHURN) drift

retrain-check: setup  ## exit 10 when retraining is recommended (docs/monitoring.md)
	$(CHURN) retrain-check

monitor: setup monitor-deps  ## local Prometheus + Pushgateway with the project's rules
	$(CHURN) monitor

drill: setup monitor-deps  ## break the running system in each way churn systems fail; report where each was caught (docs/drill.md)
	$(CHURN) drill

mlflow: setup postgres-deps  ## shared MLflow tracking server on a local PostgreSQL (docs/state.md)
	$(CHURN) mlflow-server

k8s: setup  ## regenerate k8s/'s copies of configs, rules, dashboards, canary analysis; render every overlay and documented combination to k8s/rendered/
	$(CHURN) k8s generate
	$(CHURN) canary render
	@rm -f k8s/rendered/*.yaml
	$(CHURN) k8s render --output k8s/rendered

CHECKOV_VENV := .venv-checkov
k8s-scan: k8s  ## every rendering: checkov's Kubernetes checks (skips justified in k8s/checkov.yaml), strict schemas
	@test -x $(CHECKOV_VENV)/bin/checkov || { uv venv -q $(CHECKOV_VENV) --python 3.11 && \
	  uv pip install -q --python $(CHECKOV_VENV)/bin/python -r k8s/checkov-requirements.txt; }
	$(CHECKOV_VENV)/bin/checkov --config-file k8s/checkov.yaml -d k8s/rendered
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/k8s/test_validate.py

# Two processes, a test module in each (pytest-xdist): the end-to-end modules mostly wait on the
# servers they start, so the suite takes about 12 minutes on 2 cores instead of 21.
test: setup monitor-deps postgres-deps image-deps  ## ruff and the whole test suite: unit, integration, e2e (what CI runs)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -n 2 --dist loadfile

test-unit: setup  ## the fast tier only: no trained model, no other process
	$(VENV)/bin/pytest -m unit

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf .churn
