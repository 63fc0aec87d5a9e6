# Test cluster targets (included from the root Makefile). See hack/cluster/README.md.
#   MLMODEL_CLUSTER=local|kind|existing|auto (default auto)   which cluster to use
#   CLUSTER_FLAGS=--control-plane-only                         local: etcd+apiserver+controllers only
CLUSTER := python3 hack/cluster/cluster.py
CLUSTER_STAGE = $(if $(filter kind,$(MLMODEL_CLUSTER)),kind,e2e)

.PHONY: cluster-up cluster-up-control-plane cluster-down cluster-status images kind-node-image test-e2e test-soak test-kind-smoke test-kind \
	test-compose

cluster-up: ## Bring the test cluster up (idempotent); writes .cluster/kubeconfig
	@$(STAGE) run $(CLUSTER_STAGE)/cluster-up -- $(CLUSTER) up $(CLUSTER_FLAGS)

cluster-up-control-plane: ## Only etcd + kube-apiserver + controller-manager + scheduler (local)
	@$(CLUSTER) up --control-plane-only

cluster-down: ## Stop the test cluster and clean up everything it left on the host
	@$(CLUSTER) down

cluster-status: ## Show the test cluster's provider and processes
	@$(CLUSTER) status

kind-node-image: ## Build kind's node image (mlmodel/kind-node) here, from upstream parts; see hack/cluster/mlcluster/kindimage.py
	@$(STAGE) run kind/node-image -- $(CLUSTER) kind-node-image

IMAGES_STAGE ?= images
images: ## Build the mlmodel-server/-operator/-router images (and the examples' MLflow server) and load them into the cluster
	@$(STAGE) run $(CLUSTER_STAGE)/$(IMAGES_STAGE) -- $(CLUSTER) images $(IMAGES_FLAGS)

# The e2e suite in three runs: the tests that leave the shared release alone side by side, a test file to an xdist
# worker (E2E_WORKERS; the files with a test marked `long` go out first, so that the workers end together), then
# those marked `serial` (they change the release, or need the cluster idle) one by one, whatever the first run's
# outcome; and last the cluster's teardown (`make test` runs it itself, once no lane uses a cluster).
E2E_WORKERS ?= 2
# Three tests run on kind's cluster instead, beside the suite (lane-kind), when there are two clusters: the chart's
# lifecycle, the writes of an idle cluster and the leader killed mid-rollout, serial tests which want a cluster of
# their own, not a particular one (so that the two lanes end together).
ON_KIND := tests/e2e/test_chart_lifecycle_e2e.py tests/e2e/test_operator_e2e.py::test_no_writes_at_idle \
	tests/e2e/test_rollout_e2e.py::test_the_leader_killed_mid_rollout_goes_on_at_the_same_step_and_an_abort_stays
# Docker Compose's tests want Docker and the images, no cluster: with two clusters they run last in lane-unit, which
# has time to spare (`make test-compose`).
NO_CLUSTER := tests/e2e/test_compose_e2e.py tests/e2e/test_demo_compose_e2e.py
E2E := tests/e2e --ignore=tests/e2e/kind \
	$(if $(filter kind,$(MLMODEL_CLUSTER)),,$(addprefix --deselect=,$(ON_KIND)) $(addprefix --ignore=,$(NO_CLUSTER)))
define e2e_suite
	$(call pytest,e2e/parallel,$(BIN)/pytest) $(E2E) -m "not serial" -n $(E2E_WORKERS) --dist loadfile --no-loadscope-reorder; parallel=$$?; \
	$(call pytest,e2e/serial,$(BIN)/pytest) $(E2E) -m "serial and not $(TEARDOWN)" && exit $$parallel
endef
TEARDOWN := tears_down_cluster
e2e_teardown = $(call pytest,e2e/teardown,$(BIN)/pytest) $(E2E) -m $(TEARDOWN)

test-e2e: install cluster-up images ## Run the end-to-end tests against the test cluster, then take it down
	@($(e2e_suite)); suite=$$?; $(e2e_teardown) && exit $$suite

.PHONY: e2e-suite
e2e-suite: # `make test`'s lane-e2e, which has brought the cluster and images up already: all but the teardown
	$(e2e_suite)

# The provider that does not run the full suite gets a smoke test: kind here (the local provider runs the suite),
# in a state directory of its own, so that it never meets the local cluster's.
KIND_SMOKE := env MLMODEL_CLUSTER=kind MLMODEL_CLUSTER_DIR=$(CURDIR)/.cluster-kind
test-kind-smoke: install ## kind: node image, a split, a wrong digest, the README's quickstart, `kind delete`
	@$(STAGE) run kind/node-image -- $(KIND_SMOKE) $(CLUSTER) kind-node-image
	$(call pytest,kind/smoke,$(KIND_SMOKE) $(BIN)/pytest) tests/e2e/kind

test-kind: install # make test's lane-kind: the smoke test, and the ON_KIND tests of the suite, on kind's cluster
	@$(STAGE) run kind/node-image -- $(KIND_SMOKE) $(CLUSTER) kind-node-image
	$(call pytest,kind/e2e,$(KIND_SMOKE) $(BIN)/pytest) tests/e2e/kind $(ON_KIND)

# In a state directory with no cluster in it, the images fixture builds the images (from Docker's cache once `make
# images` has) and loads them nowhere, as on a machine without a cluster.
NO_CLUSTER_ENV := env MLMODEL_CLUSTER_DIR=$(CURDIR)/.cluster-none
test-compose: install ## Docker Compose, no cluster: `mlmodel compose` on the examples, and `make demo-compose`
	$(call pytest,compose/e2e,$(NO_CLUSTER_ENV) $(BIN)/pytest) $(NO_CLUSTER)

# `make test` runs the soaks below shorter (tests/e2e/soak.py): a serving pod deleted once, then killed once, 20 s apart, and
# 4 idle resync rounds; here at the issue's length: 6 + 6 kills 30 s apart (3 minutes each) and 5 idle minutes,
# with what each measured printed (-s).
test-soak: install cluster-up images ## The fault soaks at full length: serving pods killed for 3 + 3 minutes, 5 idle minutes
	$(call pytest,e2e/soak,env MLMODEL_SOAK=1 $(BIN)/pytest) tests/e2e/test_faults_e2e.py tests/e2e/test_operator_e2e.py \
		-s -k "serving_pods_killed or no_writes_at_idle"
