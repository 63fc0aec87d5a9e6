# Test cluster targets (included from the root Makefile). See hack/cluster/README.md.
#   MLMODEL_CLUSTER=local|kind|existing|auto (default auto)   which cluster to use
#   CLUSTER_FLAGS=--control-plane-only                         local: etcd+apiserver+controllers only
CLUSTER := python3 hack/cluster/cluster.py

.PHONY: cluster-up cluster-up-control-plane cluster-down cluster-status images test-e2e

cluster-up: ## Bring the test cluster up (idempotent); writes .cluster/kubeconfig
	@$(STAGE) run e2e/cluster-up -- $(CLUSTER) up $(CLUSTER_FLAGS)

cluster-up-control-plane: ## Only etcd + kube-apiserver + controller-manager + scheduler (local)
	@$(CLUSTER) up --control-plane-only

cluster-down: ## Stop the test cluster and clean up everything it left on the host
	@$(CLUSTER) down

cluster-status: ## Show the test cluster's provider and processes
	@$(CLUSTER) status

images: ## Build mlmodel-server/-operator/-router images and load them into the cluster
	@$(STAGE) run e2e/images -- $(CLUSTER) images

test-e2e: install cluster-up images ## Run the end-to-end tests against the test cluster
	$(call pytest,e2e/tests,$(BIN)/pytest) tests/e2e
