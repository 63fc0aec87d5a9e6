"""Every name the operator writes: API group and version, labels, child-object names.

No other module spells these out; the Helm chart's ``_helpers.tpl`` is this module's twin.
Child names are ``<md>-<variant>``; the CRD guarantees that they fit in 63 characters.
"""

from __future__ import annotations

GROUP = "mlmodel.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"

FIELD_MANAGER = "mlmodel-operator"
# Applies a Deployment's current replicas once, so that the operator can stop applying them
# while an HPA takes over without the field being removed (SSA's "transferring ownership").
HANDOVER_MANAGER = "mlmodel-operator-handover"
APP = "mlmodel-server"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_VARIANT = f"{GROUP}/variant"

COMPONENT_PREDICTOR = "predictor"
COMPONENT_ROUTER = "router"
ROUTER_APP = "mlmodel-router"
ANNOTATION_ROUTER_CONFIG = f"{GROUP}/router-config"
# A digest of what the operator applied to a child: a change means the apply changes the child.
ANNOTATION_APPLIED = f"{GROUP}/applied"
# On the entry Service: when its selector last moved (RFC 3339). What it left keeps serving a while after.
ANNOTATION_LEADS_SINCE = f"{GROUP}/leads-since"
# On a ModelDeployment: what a person asks of its rollout (``kubectl mlmodel promote``, ...), see ``actions``.
ANNOTATION_ROLLOUT_ACTION = f"{GROUP}/rollout-action"

SERVER_CONTAINER = "server"
HTTP_PORT_NAME = "http"
SERVER_PORT = 8080
SERVICE_PORT = 80
ROUTER_CONTAINER = "router"
ROUTER_PORT = 8080
ADMIN_PORT_NAME = "admin"
ROUTER_ADMIN_PORT = 8081  # /ready and /metrics, never behind the entry Service
ROUTER_CONFIG_DIR = "/etc/mlmodel-router"
ROUTER_WEIGHTS_DIR = "/etc/mlmodel-router-weights"  # the weights ConfigMap, mounted whole so that kubelet refreshes it
ROUTER_WEIGHTS_FILE = "weights"
WEIGHTS_PORT = 8082  # the operator's: routers long-poll it for their weights
WEIGHTS_PATH = "/v1/weights"  # + /<namespace>/<name>
HEADER_VARIANT = "X-Model-Variant"  # pins a request to a variant; the server names the variant that answered
HEADER_ROUTER_CONFIG = "X-Router-Config"  # the digest of the router configuration that routed a response
HEADER_ROUTER_WEIGHTS = "X-Router-Weights"  # the weights the router pod had when it routed a response
# A shadow copy's: the primary's answer at the front of its body (its length, and its V2 JSON header's), the
# regressors' tolerance; the shadow's server answers with its comparison (the server's twin: shadow.py).
SHADOW_HEADERS = (
    "X-Mlmodel-Primary-Length",
    "X-Mlmodel-Primary-Header-Length",
    "X-Mlmodel-Tolerance",
)
MODEL_MOUNT = "/mnt/models"
API_KEYS_MOUNT = "/etc/mlmodel/api-keys"
MAX_NAME = 63

# The server's environment that the operator sets; a spec's env must not override them.
ENV_MODEL_URI = "MODEL_URI"
ENV_MODEL_SHA256 = "MODEL_SHA256"
ENV_MODEL_NAME = "MODEL_NAME"
ENV_MODEL_VARIANT = "MODEL_VARIANT"
ENV_ALLOW_UNPINNED = "ALLOW_UNPINNED"
ENV_API_KEYS_FILE = "API_KEYS_FILE"
ENV_MAX_BODY_BYTES = "MAX_BODY_BYTES"  # from spec.maxRequestSize, which the router enforces too
RESERVED_ENV = (
    ENV_MODEL_URI,
    ENV_MODEL_SHA256,
    ENV_MODEL_NAME,
    ENV_MODEL_VARIANT,
    ENV_ALLOW_UNPINNED,
    ENV_API_KEYS_FILE,
    ENV_MAX_BODY_BYTES,
)
# A registry model's signature and trusted types, and MLflow's own names for the credentials the server downloads
# it with (from spec.mlflow.credentialsSecret); a variant's env may set them too, and wins.
ENV_INPUT_SCHEMA = "INPUT_SCHEMA"
ENV_SKOPS_TRUSTED = "SKOPS_TRUSTED"
ENV_MLFLOW_CREDENTIALS = {
    "MLFLOW_TRACKING_TOKEN": "token",
    "MLFLOW_TRACKING_USERNAME": "username",
    "MLFLOW_TRACKING_PASSWORD": "password",
}
# And an S3 artifact store's keys, which the Secret names as the AWS SDK's environment does (s3fs reads them); the
# SDK's own name for the region is AWS_DEFAULT_REGION.
S3_KEY_ID, S3_SECRET, S3_ENDPOINT, S3_REGION = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
)
ENV_S3_CREDENTIALS = {
    **{key: key for key in (S3_KEY_ID, S3_SECRET, S3_ENDPOINT, S3_REGION)},
    "AWS_DEFAULT_REGION": S3_REGION,
}


def child(md: str, variant: str) -> str:
    """The Deployment, Service, HPA and PodDisruptionBudget of one variant."""
    return _checked(f"{md}-{variant}")


def entry_service(md: str) -> str:
    """The stable Service that clients call."""
    return _checked(md)


def router(md: str) -> str:
    """The router's Deployment and PodDisruptionBudget."""
    return _checked(f"{md}-router")


def server_policy(md: str) -> str:
    """The NetworkPolicy of every server of ``md``: the ModelDeployment's name (the router's has the router's)."""
    return _checked(md)


def router_config(md: str, digest: str) -> str:
    """The router's ConfigMap for one configuration (immutable; a new configuration is a new ConfigMap)."""
    return f"{router(md)}-{digest[:10]}"


def router_weights(md: str) -> str:
    """The router's weights ConfigMap: one per ModelDeployment, updated in place (the routers follow it live)."""
    return f"{router(md)}-weights"


def router_selector(md: str) -> dict[str, str]:
    """Labels that select the router pods of ``md``."""
    return {LABEL_NAME: ROUTER_APP, LABEL_INSTANCE: md, LABEL_COMPONENT: COMPONENT_ROUTER}


def router_labels(md: str) -> dict[str, str]:
    """All labels of the router's objects and pods."""
    return {**router_selector(md), LABEL_PART_OF: "mlmodel", LABEL_MANAGED_BY: FIELD_MANAGER}


def selector(md: str, variant: str | None = None) -> dict[str, str]:
    """Labels that select the predictor pods of ``md`` (of one variant, if given)."""
    labels = {LABEL_NAME: APP, LABEL_INSTANCE: md, LABEL_COMPONENT: COMPONENT_PREDICTOR}
    if variant is not None:
        labels[LABEL_VARIANT] = variant
    return labels


def labels(md: str, variant: str) -> dict[str, str]:
    """All labels of a variant's objects and pods."""
    return {**selector(md, variant), LABEL_PART_OF: "mlmodel", LABEL_MANAGED_BY: FIELD_MANAGER}


def owned_labels(md: str) -> dict[str, str]:
    """Labels on every object the operator makes for ``md``."""
    return {LABEL_INSTANCE: md, LABEL_MANAGED_BY: FIELD_MANAGER}


def entry_labels(md: str) -> dict[str, str]:
    """Labels of the entry Service."""
    return {LABEL_NAME: APP, LABEL_INSTANCE: md, LABEL_PART_OF: "mlmodel", LABEL_MANAGED_BY: FIELD_MANAGER}


def _checked(name: str) -> str:
    if len(name) > MAX_NAME:
        raise ValueError(f"object name {name!r} is longer than {MAX_NAME} characters")
    return name
