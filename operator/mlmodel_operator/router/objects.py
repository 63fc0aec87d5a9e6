"""The router's Kubernetes objects: its weights ConfigMap (``traffic.routing_document``, updated in place),
its config ConfigMap (the files ``traffic.router_config`` renders), its Deployment (nginx, from the router
image) and, with several replicas, its PodDisruptionBudget.

Pure functions of the parsed spec and the rendered configuration, like ``render``.
"""

from __future__ import annotations

import copy

from mlmodel_operator import names
from mlmodel_operator.render import DRAIN_SECONDS, Obj, metadata, scrape
from mlmodel_operator.router.traffic import NGINX_CONF, RouterConfig
from mlmodel_operator.spec import ModelDeployment

RUN_AS = 101  # nginx's uid in Debian's image (Dockerfile.router)
# A router's /tmp: nginx's pid, and the request and response bodies that outgrow its buffers.
TMP_SIZE = "1Gi"


def children(md: ModelDeployment, config: RouterConfig, weights: str, image: str) -> list[Obj]:
    """The router's weights and config ConfigMaps, Deployment and (with several replicas) PodDisruptionBudget,
    in apply order."""
    objects = [weights_map(md, weights), config_map(md, config), deployment(md, config, image)]
    if md.routing.replicas > 1:
        objects.append(pdb(md))
    return objects


def config_map(md: ModelDeployment, config: RouterConfig) -> Obj:
    """The router's files, immutable and named by their digest: a pod always mounts the config it was made for."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(md, names.router_config(md.name, config.digest), names.router_labels(md.name)),
        "immutable": True,
        "data": dict(config.files),
    }


def weights_map(md: ModelDeployment, document: str) -> Obj:
    """The routing document, in one ConfigMap updated in place: a new pod starts with the latest routes."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(md, names.router_weights(md.name), names.router_labels(md.name)),
        "data": {names.ROUTER_WEIGHTS_FILE: document},
    }


def deployment(md: ModelDeployment, config: RouterConfig, image: str) -> Obj:
    """nginx with the rendered config; a new config rolls out new pods before the old ones drain."""
    labels = names.router_labels(md.name)
    conf = f"{names.ROUTER_CONFIG_DIR}/{NGINX_CONF}"
    container: Obj = {
        "name": names.ROUTER_CONTAINER,
        "image": image,
        "command": ["nginx", "-c", conf, "-e", "stderr", "-g", "daemon off;"],
        "ports": [
            {"name": names.HTTP_PORT_NAME, "containerPort": names.ROUTER_PORT, "protocol": "TCP"},
            {"name": names.ADMIN_PORT_NAME, "containerPort": names.ROUTER_ADMIN_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": names.ADMIN_PORT_NAME},
            "periodSeconds": 1,
            "timeoutSeconds": 1,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": "/ready", "port": names.ADMIN_PORT_NAME},
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "lifecycle": {"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}},
        # spec.routing.resources, else the operator's default (spec.DEFAULT_ROUTER_RESOURCES or --router-resources).
        "resources": copy.deepcopy(dict(md.routing.resources or md.defaults.router_resources)),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": names.ROUTER_CONFIG_DIR, "readOnly": True},
            {"name": "weights", "mountPath": names.ROUTER_WEIGHTS_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    annotations = {names.ANNOTATION_ROUTER_CONFIG: config.digest, **scrape(names.ROUTER_ADMIN_PORT)}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(md, names.router(md.name), labels),
        "spec": {
            "replicas": md.routing.replicas,
            "selector": {"matchLabels": names.router_selector(md.name)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "100%"}},
            "template": {
                "metadata": {"labels": dict(labels), "annotations": annotations},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": RUN_AS,
                        "runAsGroup": RUN_AS,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "terminationGracePeriodSeconds": DRAIN_SECONDS + 30,
                    "containers": [container],
                    "volumes": [
                        {"name": "config", "configMap": {"name": names.router_config(md.name, config.digest)}},
                        {"name": "weights", "configMap": {"name": names.router_weights(md.name)}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE}},
                    ],
                },
            },
        },
    }


def pdb(md: ModelDeployment) -> Obj:
    """Keep one router pod through voluntary disruptions (a drain, an upgrade)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(md, names.router(md.name), names.router_labels(md.name)),
        "spec": {"minAvailable": 1, "selector": {"matchLabels": names.router_selector(md.name)}},
    }
