"""The desired children of a ModelDeployment's variants and its entry Service, as plain dicts ready for
server-side apply (the router's are in ``mlmodel_operator.router``).

Pure functions of the parsed spec: no kopf, no kubernetes client, no clock.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from mlmodel_operator import names, quantity
from mlmodel_operator.spec import ModelDeployment, Pinned, ProbeTuning, Variant

Obj = dict[str, Any]

RUN_AS = 10001
READINESS = ProbeTuning(initial_delay_seconds=0, period_seconds=1, timeout_seconds=2, failure_threshold=5)
LIVENESS = ProbeTuning(initial_delay_seconds=0, period_seconds=10, timeout_seconds=2, failure_threshold=3)
STARTUP_SECONDS = 600  # time allowed to download and load a model before liveness applies
DRAIN_SECONDS = 5  # a stopping pod keeps serving while endpoints converge, then drains
STORAGE = "ephemeral-storage"
# A server's /tmp (an emptyDir) holds scratch space (metrics files, gunicorn's heartbeats) and the
# downloaded model. A pod serves one model for its life, but its /tmp outlives a container: after
# a restart the download is written beside what the earlier container left there (the copy it
# replaces, or the partial file of a download that was cut short), so the limit has room for two.
TMP_SCRATCH = 256 << 20
SCRAPE = "prometheus.io/"


def variant_children(md: ModelDeployment) -> list[Obj]:
    """Each variant's Deployment, Service, HPA and PodDisruptionBudget (where wanted), in apply order."""
    objects: list[Obj] = []
    for variant in md.variants:
        objects.append(deployment(md, variant))
        objects.append(service(md, variant))
        if variant.autoscaling is not None:
            objects.append(hpa(md, variant))
        if least_replicas(variant) > 1:
            objects.append(variant_pdb(md, variant))
    return objects


def least_replicas(variant: Variant) -> int:
    """The fewest pods the variant runs: its replicas, or the autoscaler's minimum."""
    return variant.replicas if variant.autoscaling is None else variant.autoscaling.min_replicas


def owner_reference(md: ModelDeployment) -> Obj:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "name": md.name,
        "uid": md.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(md: ModelDeployment, name: str, labels: dict[str, str]) -> Obj:
    return {"name": name, "namespace": md.namespace, "labels": dict(labels), "ownerReferences": [owner_reference(md)]}


def deployment(md: ModelDeployment, variant: Variant) -> Obj:
    """The variant's Deployment; no ``replicas`` while an HPA owns them."""
    labels = names.labels(md.name, variant.name)
    annotations = {**scrape(names.SERVER_PORT), **variant.pod_annotations}
    spec: Obj = {
        "selector": {"matchLabels": names.selector(md.name, variant.name)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {"metadata": {"labels": dict(labels), "annotations": annotations}, "spec": _pod(md, variant)},
    }
    if variant.autoscaling is None:
        spec = {"replicas": variant.replicas, **spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(md, names.child(md.name, variant.name), labels),
        "spec": spec,
    }


def replicas_handover(deployment: Obj, replicas: int) -> Obj:
    """``deployment``'s current ``replicas`` alone, to be applied by ``names.HANDOVER_MANAGER``.

    Once that manager shares the field, the operator can stop applying it without server-side
    apply removing it (which would fall back to 1 replica); the HPA takes the field over when it
    first scales.
    """
    meta = {key: deployment["metadata"][key] for key in ("name", "namespace")}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": {"replicas": replicas}}


def _pod(md: ModelDeployment, variant: Variant) -> Obj:
    mounts: list[Obj] = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[Obj] = [{"name": "tmp", "emptyDir": {"sizeLimit": _tmp_size(variant)}}]
    pvc = variant.pvc
    if pvc is not None:
        mounts.append({"name": "model", "mountPath": names.MODEL_MOUNT, "readOnly": True})
        volumes.append({"name": "model", "persistentVolumeClaim": {"claimName": pvc.claim, "readOnly": True}})
    if md.api_key_secret is not None:
        mounts.append({"name": "api-keys", "mountPath": names.API_KEYS_MOUNT, "readOnly": True})
        secret = md.api_key_secret
        items = [{"key": secret.key, "path": secret.key}]
        volumes.append(
            {"name": "api-keys", "secret": {"secretName": secret.name, "items": items, "defaultMode": 0o440}}
        )
    container: Obj = {
        "name": names.SERVER_CONTAINER,
        "image": variant.image,
        "ports": [{"name": names.HTTP_PORT_NAME, "containerPort": names.SERVER_PORT, "protocol": "TCP"}],
        "env": _env(md, variant),
        "startupProbe": _probe("/healthz", ProbeTuning(0, 1, 2, STARTUP_SECONDS)),
        "readinessProbe": _probe("/readyz", _tuned(READINESS, variant.readiness)),
        "livenessProbe": _probe("/healthz", _tuned(LIVENESS, variant.liveness)),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "terminationMessagePolicy": "File",
        "lifecycle": {"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}},
        "volumeMounts": mounts,
        "resources": _server_resources(md, variant),
    }
    return {
        "automountServiceAccountToken": False,  # these pods unpickle models: no API credentials in reach
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationGracePeriodSeconds": DRAIN_SECONDS + 40,  # the delay, then gunicorn's 30 s drain
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": names.selector(md.name, variant.name)},
            }
        ],
        "containers": [container],
        "volumes": volumes,
    }


def _tmp_size(variant: Variant) -> str:
    """The ``sizeLimit`` of the server's ``/tmp``: scratch, and two copies of a downloaded model."""
    cache = variant.model_cache_bytes if variant.downloaded else 0
    return _bytes_quantity(2 * cache + TMP_SCRATCH)


def _variant_resources(md: ModelDeployment, variant: Variant) -> Obj:
    """The variant's resources, else the operator's default for every server container (``md.defaults``: the
    built-in ``spec.DEFAULT_SERVER_RESOURCES`` unless ``--server-resources`` changed it). A copy."""
    return copy.deepcopy(dict(variant.resources or md.defaults.server_resources))


def _server_resources(md: ModelDeployment, variant: Variant) -> Obj:
    """The variant's resources (else the default); a downloaded model's pod also requests the disk its
    cache takes, so that it is scheduled where the model fits, unless these size that themselves."""
    resources = _variant_resources(md, variant)
    if not variant.downloaded or any(STORAGE in (resources.get(kind) or {}) for kind in ("requests", "limits")):
        return resources
    requests = {**resources.get("requests", {}), STORAGE: _bytes_quantity(variant.model_cache_bytes)}
    return {**resources, "requests": requests}


def _bytes_quantity(size: int) -> str:
    """``size`` bytes as a Quantity, in the largest binary unit that holds it exactly (e.g. 2304Mi)."""
    for shift, unit in ((60, "Ei"), (50, "Pi"), (40, "Ti"), (30, "Gi"), (20, "Mi"), (10, "Ki")):
        if size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    return str(size)


def scrape(port: int) -> dict[str, str]:
    """Pod annotations for a Prometheus without the Prometheus Operator (kubernetes_sd relabelling)."""
    return {f"{SCRAPE}scrape": "true", f"{SCRAPE}port": str(port), f"{SCRAPE}path": "/metrics"}


def _env(md: ModelDeployment, variant: Variant) -> list[Obj]:
    pvc = variant.pvc
    uri = f"file://{names.MODEL_MOUNT}/{pvc.path}" if pvc is not None else variant.model_uri
    env: dict[str, Obj] = {}

    def put(name: str, value: str) -> None:
        env[name] = {"name": name, "value": value}

    put(names.ENV_MODEL_URI, uri)
    if variant.model_sha256:
        put(names.ENV_MODEL_SHA256, variant.model_sha256)
    put(names.ENV_MODEL_NAME, md.name)
    put(names.ENV_MODEL_VARIANT, variant.name)
    put("WORKERS", str(_workers(_variant_resources(md, variant))))
    if variant.allow_unpinned:
        put(names.ENV_ALLOW_UNPINNED, "true")
    if md.api_key_secret is not None:
        put(names.ENV_API_KEYS_FILE, f"{names.API_KEYS_MOUNT}/{md.api_key_secret.key}")
    if md.max_request_bytes is not None:
        put(names.ENV_MAX_BODY_BYTES, str(md.max_request_bytes))
    env |= {item["name"]: item for item in _pinned_env(variant.pinned)}
    for item in variant.env:  # the user's entries win (none of them is one of names.RESERVED_ENV)
        env[str(item["name"])] = dict(item)
    return list(env.values())


def _pinned_env(pinned: Pinned | None) -> list[Obj]:
    """A registry model's input contract and trusted types, and the credentials it downloads with (each key of
    the Secret optional: a token, or a username and password; an S3 store's keys)."""
    if pinned is None:
        return []
    env: list[Obj] = []
    if pinned.input_schema:
        env.append({"name": names.ENV_INPUT_SCHEMA, "value": pinned.input_schema})
    if pinned.skops_trusted:
        env.append({"name": names.ENV_SKOPS_TRUSTED, "value": ",".join(pinned.skops_trusted)})
    if pinned.credentials_secret:
        for name, key in {**names.ENV_MLFLOW_CREDENTIALS, **names.ENV_S3_CREDENTIALS}.items():
            ref = {"name": pinned.credentials_secret, "key": key, "optional": True}
            env.append({"name": name, "valueFrom": {"secretKeyRef": ref}})
    return env


def _workers(resources: Obj) -> int:
    """One gunicorn worker per CPU the pod may use (its limit, else its request), at least one."""
    for kind in ("limits", "requests"):
        cpu = quantity.parse((resources.get(kind) or {}).get("cpu"))
        if cpu is not None:
            return max(1, math.ceil(cpu))
    return 1


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
    """A ClusterIP Service on port 80 to the pods' ``http`` port."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(md, name, labels),
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


def entry_service(md: ModelDeployment, target: str | None, since: str) -> Obj:
    """The stable Service ``<md>``: to the router (``target`` None) or straight to one variant's pods, as it has
    since ``since``."""
    selector = names.router_selector(md.name) if target is None else names.selector(md.name, target)
    service = _service(md, names.entry_service(md.name), names.entry_labels(md.name), selector)
    service["metadata"]["annotations"] = {names.ANNOTATION_LEADS_SINCE: since}
    return service


def variant_pdb(md: ModelDeployment, variant: Variant) -> Obj:
    """Keep one of the variant's pods through voluntary disruptions; only while it always runs several,
    since a budget of one over a single pod would block every node drain."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(md, names.child(md.name, variant.name), names.labels(md.name, variant.name)),
        "spec": {"minAvailable": 1, "selector": {"matchLabels": names.selector(md.name, variant.name)}},
    }


def hpa(md: ModelDeployment, variant: Variant) -> Obj:
    """An autoscaling/v2 HPA on CPU; it, not the operator, owns the Deployment's replicas."""
    assert variant.autoscaling is not None
    scaling = variant.autoscaling
    name = names.child(md.name, variant.name)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(md, name, names.labels(md.name, variant.name)),
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
