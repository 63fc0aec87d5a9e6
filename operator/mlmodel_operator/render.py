"""The desired children of a ModelDeployment, as plain dicts ready for server-side apply.

Pure functions of the parsed spec: no kopf, no kubernetes client, no clock.
"""

from __future__ import annotations

import math
from typing import Any

from mlmodel_operator import names, traffic
from mlmodel_operator.spec import ModelDeployment, ProbeTuning, Variant

Obj = dict[str, Any]

RUN_AS = 10001
READINESS = ProbeTuning(initial_delay_seconds=0, period_seconds=5, timeout_seconds=2, failure_threshold=3)
LIVENESS = ProbeTuning(initial_delay_seconds=0, period_seconds=10, timeout_seconds=2, failure_threshold=3)
STARTUP_SECONDS = 600  # time allowed to download and load a model before liveness applies


def children(md: ModelDeployment) -> list[Obj]:
    """Every object the operator owns for ``md``, in apply order."""
    objects: list[Obj] = []
    for variant in md.variants:
        objects.append(deployment(md, variant))
        objects.append(service(md, variant))
        if variant.autoscaling is not None:
            objects.append(hpa(md, variant))
    objects.append(entry_service(md))
    return objects


def owner_reference(md: ModelDeployment) -> Obj:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "name": md.name,
        "uid": md.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(md: ModelDeployment, name: str, labels: dict[str, str]) -> Obj:
    return {"name": name, "namespace": md.namespace, "labels": dict(labels), "ownerReferences": [owner_reference(md)]}


def deployment(md: ModelDeployment, variant: Variant) -> Obj:
    """The variant's Deployment; no ``replicas`` while an HPA owns them."""
    labels = names.labels(md.name, variant.name)
    spec: Obj = {
        "selector": {"matchLabels": names.selector(md.name, variant.name)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {"metadata": {"labels": dict(labels)}, "spec": _pod(md, variant)},
    }
    if variant.pod_annotations:
        spec["template"]["metadata"]["annotations"] = dict(variant.pod_annotations)
    if variant.autoscaling is None:
        spec = {"replicas": variant.replicas, **spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(md, names.child(md.name, variant.name), labels),
        "spec": spec,
    }


def _pod(md: ModelDeployment, variant: Variant) -> Obj:
    mounts: list[Obj] = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[Obj] = [{"name": "tmp", "emptyDir": {}}]
    pvc = variant.pvc
    if pvc is not None:
        mounts.append({"name": "model", "mountPath": names.MODEL_MOUNT, "readOnly": True})
        volumes.append({"name": "model", "persistentVolumeClaim": {"claimName": pvc.claim, "readOnly": True}})
    if md.api_key_secret is not None:
        mounts.append({"name": "api-keys", "mountPath": names.API_KEYS_MOUNT, "readOnly": True})
        volumes.append({"name": "api-keys", "secret": {"secretName": md.api_key_secret.name, "defaultMode": 0o440}})
    container: Obj = {
        "name": names.SERVER_CONTAINER,
        "image": variant.image,
        "ports": [{"name": names.HTTP_PORT_NAME, "containerPort": names.SERVER_PORT, "protocol": "TCP"}],
        "env": _env(md, variant),
        "startupProbe": _probe("/healthz", ProbeTuning(0, 2, 2, STARTUP_SECONDS // 2)),
        "readinessProbe": _probe("/readyz", _tuned(READINESS, variant.readiness)),
        "livenessProbe": _probe("/healthz", _tuned(LIVENESS, variant.liveness)),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }
    if variant.resources:
        container["resources"] = dict(variant.resources)
    return {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationGracePeriodSeconds": 45,
        "containers": [container],
        "volumes": volumes,
    }


def _env(md: ModelDeployment, variant: Variant) -> list[Obj]:
    pvc = variant.pvc
    uri = f"file://{names.MODEL_MOUNT}/{pvc.path}" if pvc is not None else variant.model_uri
    env: dict[str, Obj] = {}

    def put(name: str, value: str) -> None:
        env[name] = {"name": name, "value": value}

    put("MODEL_URI", uri)
    if variant.model_sha256:
        put("MODEL_SHA256", variant.model_sha256)
    put("MODEL_NAME", md.name)
    put("MODEL_VARIANT", variant.name)
    put("WORKERS", str(_workers(variant)))
    if variant.allow_unpinned:
        put("ALLOW_UNPINNED", "true")
    if md.api_key_secret is not None:
        put("API_KEYS_FILE", f"{names.API_KEYS_MOUNT}/{md.api_key_secret.key}")
    for item in variant.env:  # the user's entries win
        env[str(item["name"])] = dict(item)
    return list(env.values())


def _workers(variant: Variant) -> int:
    """One gunicorn worker per CPU the pod may use (its limit, else its request), at least one."""
    for kind in ("limits", "requests"):
        cpu = (variant.resources.get(kind) or {}).get("cpu")
        if cpu is not None:
            return max(1, math.ceil(_cpu_quantity(cpu)))
    return 1


def _cpu_quantity(value: Any) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _tuned(default: ProbeTuning, override: ProbeTuning) -> ProbeTuning:
    return ProbeTuning(*(o if o is not None else d for o, d in zip(_fields(override), _fields(default), strict=True)))


def _fields(tuning: ProbeTuning) -> tuple[int | None, ...]:
    return (tuning.initial_delay_seconds, tuning.period_seconds, tuning.timeout_seconds, tuning.failure_threshold)


def _probe(path: str, tuning: ProbeTuning) -> Obj:
    return {
        "httpGet": {"path": path, "port": names.HTTP_PORT_NAME},
        "initialDelaySeconds": tuning.initial_delay_seconds,
        "periodSeconds": tuning.period_seconds,
        "timeoutSeconds": tuning.timeout_seconds,
        "failureThreshold": tuning.failure_threshold,
    }


def _service(md: ModelDeployment, name: str, labels: dict[str, str], selector: dict[str, str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(md, name, labels),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [
                {
                    "name": names.HTTP_PORT_NAME,
                    "port": names.SERVICE_PORT,
                    "targetPort": names.HTTP_PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }


def service(md: ModelDeployment, variant: Variant) -> Obj:
    """The variant's own Service."""
    return _service(
        md,
        names.child(md.name, variant.name),
        names.labels(md.name, variant.name),
        names.selector(md.name, variant.name),
    )


def entry_service(md: ModelDeployment) -> Obj:
    """The stable Service ``<md>``: for now it selects the highest-weighted variant only."""
    target = traffic.primary(md)
    return _service(md, names.entry_service(md.name), names.entry_labels(md.name), names.selector(md.name, target.name))


def hpa(md: ModelDeployment, variant: Variant) -> Obj:
    """An autoscaling/v2 HPA on CPU; it, not the operator, owns the Deployment's replicas."""
    assert variant.autoscaling is not None
    scaling = variant.autoscaling
    name = names.child(md.name, variant.name)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(md, name, names.labels(md.name, variant.name)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": scaling.target_cpu_percent},
                    },
                }
            ],
        },
    }
