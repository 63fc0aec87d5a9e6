# mlmodel: developer entry points. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PY_DIRS := server operator bench
# Each test stage is timed into .ci-results/ (hack/stages.py, the summary .ci/run prints). pytest runs write a
# JUnit report there, and fail a test that does not run: `-p noskip` (hack/noskip.py) makes a skip a failure.
STAGE := python3 hack/stages.py
pytest = $(STAGE) run $(1) -- env PYTHONPATH=$(CURDIR)/hack $(2) -p noskip --junitxml=.ci-results/$(subst /,-,$(1)).xml

.DEFAULT_GOAL := help

.PHONY: help install tools manifests locks lint test test-unit test-s3 test-chart test-mlserver test-integration demo demo-down \
	demo-compose demo-compose-down demo-local load bench docs clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-24s %s\n", $$1, $$2}'

# Python writes its bytecode caches, whatever the environment says: where PYTHONDONTWRITEBYTECODE is set (as on this
# CI's host), every process compiles each module it imports again (kubernetes.client: 1.9 CPU-seconds, 0.45 from its
# cache; kopf 2.4 and 0.7), and a test run starts hundreds of them. Not in the images: their Dockerfiles compile.
unexport PYTHONDONTWRITEBYTECODE

# uv installs what pip would (the same constraints, the same versions) in seconds, not a minute.
UV := $(BIN)/uv
UV_VERSION := 0.13.9
$(INSTALLED): server/pyproject.toml server/constraints.txt operator/pyproject.toml operator/constraints.txt requirements-dev.txt \
		hack/testing/pyproject.toml hack/demo/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(BIN)/pip install -q uv==$(UV_VERSION)
	$(UV) pip install -q --python $(BIN)/python -c server/constraints.txt -c operator/constraints.txt \
		-e './server[s3]' -e ./operator -e ./hack/testing -e ./hack/demo -r requirements-dev.txt
	@touch $@

# Debian's nginx with the Lua module, as in the router image: the operator's tests run `nginx -t` on rendered configs.
ROUTER_DEPS := /usr/lib/nginx/modules/ngx_http_lua_module.so
APT_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends

$(ROUTER_DEPS):
	$(APT_INSTALL) nginx libnginx-mod-http-lua || { apt-get update -q && $(APT_INSTALL) nginx libnginx-mod-http-lua; }

# The MLflow tracking server the registry tests run on loopback, in a venv of its own (mlflow pins gunicorn below the
# model server's), at the version of the client requirements-dev.txt pins; kept beside the Go builds.
MLFLOW_VERSION := $(shell sed -n 's/^mlflow-skinny==//p' requirements-dev.txt)
MLFLOW_SERVER := $(or $(MLMODEL_CACHE_DIR),$(HOME)/.cache/mlmodel)/mlflow-server-$(MLFLOW_VERSION)
$(MLFLOW_SERVER)/bin/mlflow: | $(INSTALLED)
	@rm -rf $(MLFLOW_SERVER) && $(PYTHON) -m venv $(MLFLOW_SERVER)
	$(UV) pip install -q --python $(MLFLOW_SERVER)/bin/python "mlflow[auth]==$(MLFLOW_VERSION)"

.PHONY: mlflow-server minio
mlflow-server: $(MLFLOW_SERVER)/bin/mlflow ## The MLflow tracking server the registry tests run (a venv in ~/.cache/mlmodel)

install: $(INSTALLED) $(ROUTER_DEPS) tools mlflow-server ## Create .venv with everything the repo needs (and Debian's nginx for router tests)

# Not in `make install` (the first, serial step of CI, where its cold build would wait before every lane): `make
# test-s3` builds it, and only once, at the lowest priority (NICE).
minio: install ## The MinIO server (S3-compatible) that the server's s3:// tests run on loopback: built once, linked into .venv/bin
	@$(NICE) python3 hack/tools.py --link $(BIN) minio

tools: ## helm, promtool, prometheus, kubeconform, actionlint, docker-compose: built from their Go modules (cached), linked into .venv/bin
	@mkdir -p $(BIN)
	@python3 hack/tools.py --link $(BIN) helm promtool prometheus kubeconform actionlint docker-compose

manifests: install ## Regenerate the chart's CRD template and README, and manifests/install.yaml
	$(BIN)/python hack/chart.py

# pip-tools in a venv of its own. The locks pin the constraints' versions with the sha256 of every file the
# index has for each, and setuptools to build the project with; the images install them with --require-hashes.
LOCK_VENV := $(VENV)/pip-tools
PIP_COMPILE := CUSTOM_COMPILE_COMMAND='make locks' $(LOCK_VENV)/bin/pip-compile --quiet --generate-hashes \
	--allow-unsafe --strip-extras --no-emit-find-links --build-deps-for=wheel

locks: ## Regenerate server/ and operator/requirements.lock (the images' hashed pins) from the constraints
	@test -x $(LOCK_VENV)/bin/pip-compile || { $(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install -q pip==26.3 pip-tools==7.6.2; }
	$(PIP_COMPILE) --extra s3 -c server/constraints.txt -o server/requirements.lock server/pyproject.toml
	$(PIP_COMPILE) -c operator/constraints.txt -o operator/requirements.lock operator/pyproject.toml

# What no other step waits for runs at the lowest CPU priority, so that on 2 cores it takes what the cluster lanes
# leave: mypy (7 minutes of a cold run, beside the Kubernetes build) and MinIO's build.
NICE := nice -n 19
# mypy's cache outlives the clone, as the Go builds do (it checks each file's hash, so a stale entry is only re-read).
MYPY_CACHE := $(or $(MLMODEL_CACHE_DIR),$(HOME)/.cache/mlmodel)/mypy
mypy = MYPY_CACHE_DIR=$(MYPY_CACHE)/$(1) $(NICE) $(CURDIR)/$(BIN)/mypy
lint: install ## ruff, mypy, and actionlint on the GitHub workflow
	@$(STAGE) start lint
	$(BIN)/ruff check $(PY_DIRS) hack tests charts
	$(BIN)/ruff format --check $(PY_DIRS) hack tests charts
	cd server && $(call mypy,server) --config-file ../pyproject.toml mlmodel_server tests examples
	cd operator && $(call mypy,operator) --config-file ../pyproject.toml mlmodel_operator tests
	MYPYPATH=server:operator $(call mypy,bench) bench  # the packages' sources: installed, they carry no py.typed
	MYPYPATH=hack/cluster $(call mypy,cluster) hack/cluster
	MYPYPATH=hack $(call mypy,hack) hack/tools.py hack/kubeschemas.py hack/chart.py hack/apiref.py hack/stages.py hack/cpu.py hack/noskip.py hack/tests
	MYPYPATH=hack/testing $(call mypy,testing) hack/testing/mlmodel_testing hack/demo
	cd charts/tests && MYPYPATH=../../hack $(call mypy,charts) --config-file ../../pyproject.toml .
	cd tests/e2e && MYPYPATH=../../hack/testing:../../hack/demo $(call mypy,e2e) --config-file ../../pyproject.toml .
	$(BIN)/actionlint -shellcheck= -pyflakes= .github/workflows/*.yml
	@$(STAGE) end lint

test-unit: install test-chart test-mlserver ## Tests that need no cluster: server (unit, Flask client, real gunicorn), operator core, bench, chart, hack, demo
	$(call pytest,unit/server,$(BIN)/pytest) -q server/tests --ignore=server/tests/test_mlserver.py --ignore=server/tests/test_s3.py
	$(call pytest,unit/operator,$(BIN)/pytest) -q operator/tests --ignore=operator/tests/integration --ignore=operator/tests/test_mlflow_s3.py
	$(call pytest,unit/bench,$(BIN)/pytest) -q bench
	$(call pytest,unit/hack,$(BIN)/pytest) -q hack/tests
	$(call pytest,unit/demo,$(BIN)/pytest) -q hack/demo

# Last in the unit lane: a cold MinIO build then takes the CPU that the cluster lanes' tests leave.
test-s3: minio ## The server's s3:// downloads, and the operator's reads of a registry's S3 artifacts, against a real MinIO on loopback
	$(call pytest,unit/s3,$(BIN)/pytest) -q server/tests/test_s3.py operator/tests/test_mlflow_s3.py

test-chart: install ## The Helm chart: lint, templates, RBAC, schemas (kubeconform), alerts (promtool)
	$(call pytest,unit/chart,$(BIN)/pytest) -q charts/tests

# MLServer pins a starlette that kserve cannot share: its contract test gets a venv of its own, kept in .venv/.
MLSERVER_VENV := $(VENV)/mlserver
$(MLSERVER_VENV)/.installed: $(INSTALLED) server/pyproject.toml server/constraints.txt server/tests/requirements-mlserver.txt
	@test -x $(MLSERVER_VENV)/bin/python || $(PYTHON) -m venv $(MLSERVER_VENV)
	$(UV) pip install -q --python $(MLSERVER_VENV)/bin/python -c server/constraints.txt -e ./server \
		-r server/tests/requirements-mlserver.txt
	@touch $@

test-mlserver: $(MLSERVER_VENV)/.installed ## MLServer's codecs and types against the real server (its own venv)
	$(call pytest,unit/mlserver,$(MLSERVER_VENV)/bin/pytest) -q server/tests/test_mlserver.py

test-integration: install cluster-up ## The CRD, the chart's RBAC and the operator (in process, kopf.operator) against the cluster's real API server
	$(call pytest,integration,env KUBECONFIG=$(or $(MLMODEL_CLUSTER_DIR),$(CURDIR)/.cluster)/kubeconfig $(BIN)/pytest) \
		-q -n 3 --dist worksteal operator/tests/integration

# After the install, three lanes side by side, each one step after the other (a lane's output shows when it ends),
# each to its end whatever the others do:
# - unit: lint, the docs and the unit tests, then Docker Compose's tests (no cluster) once the images are built;
# - e2e: the local cluster, the images loaded into it, and the e2e suite on it as soon as they are (all but its
#   teardown), while the examples' MLflow image loads;
# - kind: once the local cluster is up (a cold cache builds the Kubernetes binaries that kind's node image takes),
#   kind's cluster, the integration tests on its API server (they run operators of their own, which must not meet
#   the e2e suite's) while the images load into kind, then the smoke test, the README's quickstart and ON_KIND.
# Last, when no lane uses a cluster any more, the local cluster's teardown (its test sees every cluster program on
# the host), and the 15 slowest tests. With MLMODEL_CLUSTER=kind there is one cluster: the integration tests run
# on it, before the suite.
test: install ## Every test: lint, docs, unit, integration, end-to-end on a real cluster, and the kind smoke test
	@$(MAKE) --no-print-directory -j3 --output-sync=recurse lane-unit lane-e2e lane-kind; lanes=$$?; \
	$(e2e_teardown); teardown=$$?; \
	$(STAGE) slowest 15; [ $$lanes = 0 ] && exit $$teardown

.PHONY: lane-unit lane-e2e lane-kind
ifeq ($(MLMODEL_CLUSTER),kind)
lane-unit:
	@MAKEFLAGS= $(MAKE) --no-print-directory lint docs test-unit test-s3
lane-e2e: cluster-up
	@MAKEFLAGS= $(MAKE) --no-print-directory test-integration; integration=$$?; \
	MAKEFLAGS= $(MAKE) --no-print-directory images e2e-suite && exit $$integration
lane-kind:
else
# Docker Compose's tests once the e2e lane has built the images (two builds at once of a changed source make two
# image IDs), then the s3:// tests.
lane-unit:
	@MAKEFLAGS= $(MAKE) --no-print-directory lint docs test-unit; unit=$$?; \
	$(STAGE) wait e2e/images; MAKEFLAGS= $(MAKE) --no-print-directory test-compose; compose=$$?; \
	MAKEFLAGS= $(MAKE) --no-print-directory test-s3 && exit $$((unit || compose))
# The examples' MLflow image (0.5 GB, half a minute to load) loads while the suite starts: its one test waits for it.
lane-e2e: cluster-up
	@MAKEFLAGS= $(MAKE) --no-print-directory images IMAGES_FLAGS=--no-examples && { \
	MAKEFLAGS= $(MAKE) --no-print-directory images IMAGES_STAGE=examples-images & \
	MAKEFLAGS= $(MAKE) --no-print-directory e2e-suite; suite=$$?; wait $$! && exit $$suite; }
lane-kind: cluster-up
	@MAKEFLAGS= $(KIND_SMOKE) $(MAKE) --no-print-directory cluster-up && \
	MAKEFLAGS= $(KIND_SMOKE) $(MAKE) --no-print-directory -j2 --output-sync=target test-integration kind-images; \
	integration=$$?; MAKEFLAGS= $(MAKE) --no-print-directory test-kind && exit $$integration
endif

# lane-kind's image load, once the e2e lane has built the images: two builds at once of a changed source made two
# image IDs, and kind's second check loaded them all again (88 s). Outside the ifeq: lane-kind's make runs it with
# MLMODEL_CLUSTER=kind. Not the MLflow server's image (0.5 GB): no test on kind's cluster runs it.
.PHONY: kind-images
kind-images:
	@$(STAGE) wait e2e/images; $(MAKE) --no-print-directory images IMAGES_FLAGS=--no-examples

# `make demo` makes the venv itself (its first step), so it starts with the system's python3.
demo: ## The whole product on a cluster: venv, cluster, images, chart, example models, a live canary 0-10-50-100 %
	@python3 hack/demo/demo.py

demo-down: install ## Remove what `make demo` made: the example namespace, the release, the cluster
	@$(BIN)/python hack/demo/demo_cluster.py down

# No cluster: the same canary under Docker Compose (hack/demo/demo_compose.py). Its first step is `make images`
# without the examples' MLflow server (Prometheus's image is built either way); it starts the Docker engine.
DEMO_COMPOSE_PORT ?= 8080
DEMO_COMPOSE_PROMETHEUS_PORT ?= 9090
demo-compose: install ## No cluster: the canary under Docker Compose, weights 90/10 -> 50/50 -> 0/100 -> 90/10, left running on :8080
	@$(BIN)/python hack/demo/demo_compose.py up --port $(DEMO_COMPOSE_PORT) --prometheus-port $(DEMO_COMPOSE_PROMETHEUS_PORT)

demo-compose-down: install ## Remove what `make demo-compose` made: its containers, network, volume and .demo-compose/
	@$(BIN)/python hack/demo/demo_compose.py down

LOAD_USERS ?= 20
LOAD_SECONDS ?= 30
load: install ## Locust (LOAD_USERS, LOAD_SECONDS) against the demo's canary: requests and latency per variant
	@$(BIN)/python hack/demo/demo_cluster.py load --users $(LOAD_USERS) --seconds $(LOAD_SECONDS)

demo-local: install ## No cluster: train the example model, serve it with a local mlmodel-server, call each protocol
	$(BIN)/python server/examples/demo.py

docs: install ## Build the docs site into .site/ (MkDocs, strict: a broken link or anchor fails)
	@$(STAGE) run docs -- env NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet -d .site

bench: install ## Side-by-side benchmark against the tutorial Flask app (needs wrk)
	$(BIN)/python bench/run.py --markdown bench/RESULTS.md

clean: ## Remove the venv and local state (run cluster-down and demo-compose-down first)
	rm -rf $(VENV) .demo .demo-compose .bench .ci-results

include hack/cluster.mk
