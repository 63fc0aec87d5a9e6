"""The test cluster as the e2e tests (``tests/e2e``) and ``make demo`` (``hack/demo``) reach it.

``cluster``: kubectl against the harness's cluster; ``release``: the operator's Helm release; ``models``: the
example models, their model store and the ModelDeployments built on them; ``status``: what a ModelDeployment
and its children report; ``load``: requests at a constant rate or in bursts; ``pods``: a client pod and the
restricted security context; ``host``: what a cluster can leave behind on this host; ``mlflow``: a real MLflow
tracking server on loopback, and models registered on it; ``minio``: a real S3-compatible store on loopback.
"""
