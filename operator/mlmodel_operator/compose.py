"""A ModelDeployment as a Docker Compose project: the same servers, router, weights and metrics as in a cluster,
without one. Pure: the parsed spec in, the Compose document and the files beside it out (``cli`` writes
them).

One renderer: each service is translated from the object the operator applies (``render.deployment`` for a
variant, ``router.objects.deployment`` for the router, whose nginx configuration is ``traffic.router_config``'s),
so a Compose service has its pod's image, command, env, probe (as a ``healthcheck``), limits, user, read-only
root and dropped capabilities. What Compose has no word for is listed in ``Project.dropped``, never lost quietly.

The router reads its weights from a file in the project (``weights/``), every second, and probes the variants
itself (``traffic.Discovery``): a new split is a new file, not a new container.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urlparse

import yaml

from mlmodel_operator import names, quantity, render
from mlmodel_operator.render import Obj
from mlmodel_operator.router import objects, traffic
from mlmodel_operator.spec import DEFAULT_ROUTER_REPLICAS, ModelDeployment, ProbeTuning, SpecError, Variant

ROUTER_DIR = "router"  # the router's nginx.conf and Lua module, in the project's directory
WEIGHTS_DIR = "weights"  # its weights document, rewritten in place by each render
WEIGHTS_FILE = f"{WEIGHTS_DIR}/{names.ROUTER_WEIGHTS_FILE}"  # that document, from the project's directory
PROMETHEUS_DIR = "prometheus"  # prometheus.yml and the chart's alert rules
PROMETHEUS = "prometheus"  # the Prometheus service
PROMETHEUS_PORT = 9090
DOCKER_DNS = "127.0.0.11"  # the embedded DNS server of a Compose network
SCRAPE_SECONDS = 5
LABEL_CONFIG = f"{names.GROUP}/router-config"  # a new router configuration is a new router container


@dataclass(frozen=True)
class Options:
    """What the command line chooses: images, and where the router (and Prometheus) listen on the host."""

    server_image: str = "mlmodel-server:0.1.0"  # for variants that name none (the chart's default)
    router_image: str = "mlmodel-router:0.1.0"
    address: str = "127.0.0.1"
    port: int = 8080
    prometheus_image: str | None = None  # None: no Prometheus
    prometheus_port: int = PROMETHEUS_PORT


@dataclass(frozen=True)
class Project:
    """The Compose document, the files it mounts (paths relative to its directory), the weights it routes by,
    and one line for each spec field that Compose cannot honour."""

    document: Obj
    files: Mapping[str, str]
    weights: Mapping[str, int]
    dropped: tuple[str, ...]


def project(md: ModelDeployment, options: Options, live: str | None = None, alerts: str | None = None) -> Project:
    """``md`` as a Compose project; ``live`` is the weights document the project has now (its serial goes on),
    ``alerts`` the chart's alert rules (a Prometheus rules file) for ``options.prometheus_image``."""
    _refuse(md)
    hosts = {v.name: names.child(md.name, v.name) for v in md.variants}
    config = traffic.router_config(md, hosts, discovery=traffic.Discovery(resolver=DOCKER_DNS))
    _, weights = traffic.next_document(config.routes, live)
    files = {
        **{f"{ROUTER_DIR}/{name}": text for name, text in config.files.items()},
        WEIGHTS_FILE: weights,
    }
    services = {hosts[v.name]: _variant(md, v) for v in md.variants}
    router = _service(objects.deployment(md, config, options.router_image))
    router["ports"] = [f"{options.address}:{options.port}:{names.ROUTER_PORT}"]
    router["labels"] = {LABEL_CONFIG: config.digest}
    starts = [s["healthcheck"]["start_period"] for s in services.values() if "start_period" in s["healthcheck"]]
    if starts:  # healthy once a variant answers its probe (router.lua's /ready): the slowest variant's start
        router["healthcheck"]["start_period"] = max(starts, key=lambda period: int(period.removesuffix("s")))
    services[names.router(md.name)] = router
    document: Obj = {"name": md.name, "services": services}
    if options.prometheus_image is not None:
        files[f"{PROMETHEUS_DIR}/prometheus.yml"] = _prometheus_config(md, hosts, alerts is not None)
        if alerts is not None:
            files[f"{PROMETHEUS_DIR}/alerts.yml"] = alerts
        services[PROMETHEUS] = _prometheus(options)
        document["volumes"] = {PROMETHEUS: {}}
    return Project(document, files, config.weights, _dropped(md))


def dump(document: Obj) -> str:
    """The Compose file's text."""
    header = "# Rendered by `mlmodel compose render` from a ModelDeployment. Render again rather than edit.\n"
    return header + yaml.safe_dump(document, sort_keys=False, width=120)


def _refuse(md: ModelDeployment) -> None:
    """Spec values that cannot run at all without a cluster: an error naming the field."""
    for i, v in enumerate(md.variants):
        if v.pvc is not None:
            raise SpecError(
                f"spec.variants[{i}].modelUri: a pvc:// URI needs a PersistentVolumeClaim, which Compose has not: "
                "use file:// (a file on this host), http(s):// or s3://"
            )
        if v.ref is not None and v.pinned is None:
            raise SpecError(f"spec.variants[{i}].modelUri: {v.model_uri} must be pinned first (mlmodel_operator.pins)")
    if md.api_key_secret is not None:
        raise SpecError(
            "spec.apiKeySecret: Compose has no Secrets to read the keys from, and serving without them would open the "
            "endpoint: remove it, or run this ModelDeployment on a cluster"
        )


def _dropped(md: ModelDeployment) -> tuple[str, ...]:
    """One line for each field of ``md`` that Compose has no meaning for."""
    lines = []
    for i, v in enumerate(md.variants):
        where = f"spec.variants[{i}]"
        if v.autoscaling is not None:
            lines.append(
                f"{where}.autoscaling: Compose does not autoscale; it runs minReplicas ({v.autoscaling.min_replicas})"
            )
        elif v.replicas > 1:
            lines.append(f"{where}.replicas: no PodDisruptionBudget in Compose; {v.replicas} containers, no budget")
        if v.pod_annotations:
            lines.append(f"{where}.podAnnotations: Compose has no pod annotations; left out")
        if v.liveness != ProbeTuning():
            lines.append(
                f"{where}.probes.liveness: Docker restarts no unhealthy container; it sets only how long a failing "
                "healthcheck takes to turn unhealthy"
            )
        lines.extend(
            f"{where}.env[{j}].valueFrom: Compose has no Secrets or ConfigMaps; {item.get('name')} left out"
            for j, item in enumerate(v.env)
            if "valueFrom" in item
        )
    if md.mlflow.credentials_secret is not None:
        lines.append(
            "spec.mlflow.credentialsSecret: Compose has no Secrets; the servers take MLFLOW_TRACKING_TOKEN (or "
            "_USERNAME and _PASSWORD), and an S3 store's AWS_* keys, from the shell that runs docker compose"
        )
    if md.rollout is not None:
        lines.append("spec.rollout: the progressive rollout is the operator's; Compose runs the variant as written")
    if md.routing.replicas > DEFAULT_ROUTER_REPLICAS:  # the default is a cluster's spare for a node drain
        lines.append(f"spec.routing.replicas: one router publishes the host port; {md.routing.replicas} asked for")
    return tuple(lines)


def _variant(md: ModelDeployment, variant: Variant) -> Obj:
    """The variant's service: its Deployment's pod, with a ``file://`` model bind-mounted read-only."""
    service = _service(render.deployment(md, variant))
    path = _host_path(variant)
    if path is not None:
        target = f"{names.MODEL_MOUNT}/{variant.name}/{PurePosixPath(path).name}"
        service["environment"][names.ENV_MODEL_URI] = f"file://{target}"
        service["volumes"].append({"type": "bind", "source": path, "target": target, "read_only": True})
    if variant.pinned is not None:  # a registry's model: its download's credentials, from the shell if set there
        service["environment"].update(dict.fromkeys(names.ENV_MLFLOW_CREDENTIALS))
        if variant.model_uri.startswith("s3://"):  # and its S3 store's keys
            service["environment"].update(dict.fromkeys(names.ENV_S3_CREDENTIALS))
    service["deploy"]["replicas"] = render.least_replicas(variant)
    return service


def _host_path(variant: Variant) -> str | None:
    """A ``file://`` model's path on the host: ``file:///abs/m.joblib``, or ``file://./models/m.joblib`` from the
    project's directory (as Compose takes a relative bind mount's source)."""
    parsed = urlparse(variant.model_uri)
    if parsed.scheme != "file":
        return None
    return f".{parsed.path}" if parsed.netloc == "." else parsed.path


def _service(deployment: Obj) -> Obj:
    """A Deployment's one container as a Compose service."""
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    service: Obj = {"image": container["image"]}
    if "command" in container:
        service["command"] = list(container["command"])
    env = {item["name"]: item["value"] for item in container.get("env", ()) if "value" in item}
    service["environment"] = env
    service["user"] = f"{security['runAsUser']}:{security.get('runAsGroup', security['runAsUser'])}"
    service["read_only"] = bool(security.get("readOnlyRootFilesystem"))
    service["cap_drop"] = list(security.get("capabilities", {}).get("drop", []))
    if security.get("allowPrivilegeEscalation") is False:
        service["security_opt"] = ["no-new-privileges:true"]
    service["healthcheck"] = _healthcheck(container)
    service["stop_grace_period"] = f"{pod['terminationGracePeriodSeconds']}s"
    service["restart"] = "unless-stopped"
    service["volumes"] = [_volume(mount, pod["volumes"]) for mount in container.get("volumeMounts", ())]
    service["deploy"] = {"resources": _resources(container.get("resources", {}))}
    return service


def _healthcheck(container: Obj) -> Obj:
    """The readiness probe as a shell check (an HTTP GET through bash's /dev/tcp, since neither image has an HTTP
    client to spare), at its interval; unhealthy only after as long as the liveness probe allows, the point at which
    Kubernetes would restart the container (``docker compose up --wait`` gives up on an unhealthy one, where a
    pod that fails a readiness check or two on a loaded machine only leaves the endpoints for a moment); and the
    startup probe's allowance as ``start_period``."""
    probe = container["readinessProbe"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    get = probe["httpGet"]
    request = f"GET {get['path']} HTTP/1.0\\r\\n\\r\\n"
    script = (
        f"exec 3<>/dev/tcp/127.0.0.1/{ports[get['port']]} && printf {shlex.quote(request)} >&3 "
        "&& head -n1 <&3 | grep -q ' 200 '"
    )
    timeout, retries = probe["timeoutSeconds"], probe["failureThreshold"]
    live = container.get("livenessProbe")
    if live is not None:
        timeout = max(timeout, live["timeoutSeconds"])
        retries = max(retries, math.ceil(live["periodSeconds"] * live["failureThreshold"] / probe["periodSeconds"]))
    check: Obj = {
        "test": ["CMD", "bash", "-c", script],
        "interval": f"{probe['periodSeconds']}s",
        "timeout": f"{timeout}s",
        "retries": retries,
    }
    startup = container.get("startupProbe")
    if startup is not None:
        check["start_period"] = f"{startup['periodSeconds'] * startup['failureThreshold']}s"
    return check


def _volume(mount: Obj, volumes: list[Obj]) -> Obj:
    """A pod's volume mount as a Compose one: an emptyDir a tmpfs (sized), the router's ConfigMaps the project's
    directories."""
    (volume,) = [v for v in volumes if v["name"] == mount["name"]]
    target = mount["mountPath"]
    if "emptyDir" in volume:
        size = quantity.parse(volume["emptyDir"].get("sizeLimit"))
        tmpfs: Obj = {"mode": 0o1777}
        if size is not None:
            tmpfs["size"] = int(size)
        return {"type": "tmpfs", "target": target, "tmpfs": tmpfs}
    source = {names.ROUTER_CONFIG_DIR: ROUTER_DIR, names.ROUTER_WEIGHTS_DIR: WEIGHTS_DIR}[target]
    return {"type": "bind", "source": f"./{source}", "target": target, "read_only": True}


def _resources(resources: Obj) -> Obj:
    """Kubernetes limits and requests as Compose's ``limits`` and ``reservations`` (cpus, memory in bytes)."""
    out: Obj = {}
    for kind, compose in (("limits", "limits"), ("requests", "reservations")):
        values = resources.get(kind) or {}
        entry: Obj = {}
        if "cpu" in values:
            entry["cpus"] = f"{float(quantity.parse(values['cpu']) or 0):g}"
        if "memory" in values:
            entry["memory"] = str(int(quantity.parse(values["memory"]) or 0))
        if entry:
            out[compose] = entry
    return out


def _prometheus(options: Options) -> Obj:
    return {
        "image": options.prometheus_image,
        "command": [
            "--config.file=/etc/prometheus/prometheus.yml",
            "--storage.tsdb.path=/prometheus",
            f"--web.listen-address=:{PROMETHEUS_PORT}",
        ],
        "ports": [f"127.0.0.1:{options.prometheus_port}:{PROMETHEUS_PORT}"],
        "read_only": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "restart": "unless-stopped",
        "volumes": [
            {"type": "bind", "source": f"./{PROMETHEUS_DIR}", "target": "/etc/prometheus", "read_only": True},
            {"type": "volume", "source": PROMETHEUS, "target": "/prometheus"},
        ],
    }


def _prometheus_config(md: ModelDeployment, hosts: Mapping[str, str], alerts: bool) -> str:
    """Every variant's servers and the router, scraped with the labels the chart's PodMonitors give them."""
    labels = {"namespace": md.namespace}  # the router's series name their model, the servers' their variant
    config: Obj = {
        "global": {"scrape_interval": f"{SCRAPE_SECONDS}s", "evaluation_interval": f"{SCRAPE_SECONDS}s"},
        "scrape_configs": [
            {
                "job_name": "mlmodel-servers",
                "static_configs": [
                    {"targets": [f"{host}:{names.SERVER_PORT}"], "labels": {**labels, "model": md.name}}
                    for host in hosts.values()
                ],
            },
            {
                "job_name": "mlmodel-router",
                "static_configs": [
                    {"targets": [f"{names.router(md.name)}:{names.ROUTER_ADMIN_PORT}"], "labels": dict(labels)}
                ],
            },
        ],
    }
    if alerts:
        config["rule_files"] = ["/etc/prometheus/alerts.yml"]
    return yaml.safe_dump(config, sort_keys=False)
