"""Parse a ModelDeployment once into frozen dataclasses.

The CRD's schema and CEL rules reject most bad specs at ``kubectl apply``; what gets
past them (or an operator running against an older CRD) raises ``SpecError``, which
names the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING
from typing import Any
from urllib.parse import urlparse

from mlmodel_operator import actions, names, quantity, registry

_HEADER = re.compile(r"[A-Za-z0-9][-A-Za-z0-9]{0,63}")
_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
DEFAULT_SCALE_DOWN_DELAY = 30.0  # seconds: rollout.scaleDownDelay when unset
DEFAULT_INTERVAL = 30.0  # seconds: rollout.analysis.interval when unset
DEFAULT_MIN_REQUESTS = 20  # rollout.analysis.minRequests when unset
REMOTE_SCHEMES = frozenset({"http", "https", "s3"})
REGISTRY_SCHEMES = frozenset({"models", "runs"})  # an MLflow registry's URIs, pinned by the operator
SCHEMES = REMOTE_SCHEMES | REGISTRY_SCHEMES | {"file", "pvc"}
DEFAULT_MODEL_CACHE = 1 << 30  # bytes: modelCacheSize when unset (the CRD's description says so)
DEFAULT_MAX_REQUEST = 10 << 20  # bytes: maxRequestSize when unset, the server's own default (MAX_BODY_BYTES)
DEFAULT_MIRROR_BUFFER = 4 << 20  # bytes: routing.mirror.bufferSize when unset
DEFAULT_CONNECTIONS_PER_CLIENT = 64  # routing.connectionsPerClient when unset
DEFAULT_ROUTER_REPLICAS = 2  # routing.replicas when unset
# A server container's resources where neither its variant nor the operator's settings (--server-resources) give
# any (the CRD's description says so): one gunicorn worker, room for a small scikit-learn model, no CPU limit
# (throttling hurts latency).
DEFAULT_SERVER_RESOURCES: Mapping[str, Any] = {
    "requests": {"cpu": "100m", "memory": "256Mi"},
    "limits": {"memory": "1Gi"},
}
# A router container's, where neither spec.routing.resources nor the operator's settings (--router-resources) give any.
DEFAULT_ROUTER_RESOURCES: Mapping[str, Any] = {
    "requests": {"cpu": "50m", "memory": "32Mi"},
    "limits": {"memory": "128Mi"},
}
_ACTION = names.ANNOTATION_ROLLOUT_ACTION
PINNED = "pinned"  # the key of a variant's pin, in the variant as the operator rewrites it
_MAX_BYTES = 2**60  # 1Ei: more than any disk


class SpecError(ValueError):
    """A spec the operator cannot reconcile; the message starts with the field."""


@dataclass(frozen=True)
class Autoscaling:
    min_replicas: int
    max_replicas: int
    target_cpu_percent: int


@dataclass(frozen=True)
class ProbeTuning:
    """Overrides for a probe; ``None`` keeps the operator's default."""

    initial_delay_seconds: int | None = None
    period_seconds: int | None = None
    timeout_seconds: int | None = None
    failure_threshold: int | None = None


@dataclass(frozen=True)
class PvcModel:
    """A model file on a PersistentVolumeClaim: ``pvc://<claim>/<path>``."""

    claim: str
    path: str


@dataclass(frozen=True)
class Pinned:
    """What a registry URI (``models:/``, ``runs:/``) resolved to, kept with the variant it pins. The operator
    writes it into the variant (``pins.pinned_item``, under ``PINNED``), never a user: the CRD has no such field."""

    source: str  # the modelUri as written, e.g. models:/iris@champion
    version: str | None  # the registry's version (None for a runs:/ URI)
    run_id: str | None
    input_schema: str | None  # the MLflow signature's inputs (JSON), the server's input contract
    skops_trusted: tuple[str, ...] = ()
    credentials_secret: str | None = None  # the Secret the server downloads with (spec.mlflow.credentialsSecret)


@dataclass(frozen=True)
class Variant:
    name: str
    model_uri: str
    model_sha256: str | None
    allow_unpinned: bool
    replicas: int
    weight: int
    image: str
    autoscaling: Autoscaling | None = None
    resources: Mapping[str, Any] = field(default_factory=dict)
    env: tuple[Mapping[str, Any], ...] = ()
    pod_annotations: Mapping[str, str] = field(default_factory=dict)
    readiness: ProbeTuning = ProbeTuning()
    liveness: ProbeTuning = ProbeTuning()
    model_cache_bytes: int = DEFAULT_MODEL_CACHE  # room for the downloaded model (modelCacheSize)
    ref: registry.Ref | None = None  # a models:/ or runs:/ modelUri, before the operator pins it
    pinned: Pinned | None = None  # what such a URI resolved to (model_uri and model_sha256 are then its file's)

    @property
    def downloaded(self) -> bool:
        """The server downloads the model into its cache (``/tmp``) at start-up."""
        return urlparse(self.model_uri).scheme in REMOTE_SCHEMES | REGISTRY_SCHEMES

    @property
    def pvc(self) -> PvcModel | None:
        """Where the model lives when ``modelUri`` is ``pvc://``."""
        parsed = urlparse(self.model_uri)
        if parsed.scheme != "pvc":
            return None
        return PvcModel(parsed.netloc, parsed.path.lstrip("/"))


@dataclass(frozen=True)
class ApiKeySecret:
    name: str
    key: str


@dataclass(frozen=True)
class Tolerance:
    """How far a regressor's output may be from the primary's and still agree: ``absolute + relative *
    |primary's|`` (``agreement.tolerance``, ``routing.mirror.tolerance``)."""

    absolute: float = 0.0
    relative: float = 0.0


@dataclass(frozen=True)
class Mirror:
    """Copy ``percent`` % of the requests to ``variant``, whose server compares its answers with the primary's
    (a regressor's within ``tolerance``) unless ``compare`` is off, holding at most ``buffer_bytes`` of bodies
    and answers per router worker for copies not yet sent."""

    variant: str
    percent: int
    buffer_bytes: int = DEFAULT_MIRROR_BUFFER
    tolerance: Tolerance = Tolerance()
    compare: bool = True


@dataclass(frozen=True)
class RateLimit:
    """Requests per second per client address, with a burst above it."""

    requests_per_second: int
    burst: int


@dataclass(frozen=True)
class Routing:
    """``spec.routing``: the router in front of the variants."""

    always: bool = False  # router: always (else only when a routing feature needs it)
    replicas: int = DEFAULT_ROUTER_REPLICAS
    resources: Mapping[str, Any] = field(default_factory=dict)
    sticky_header: str | None = None
    allow_override: bool = False
    mirror: Mirror | None = None
    rate_limit: RateLimit | None = None
    connections_per_client: int = DEFAULT_CONNECTIONS_PER_CLIENT


@dataclass(frozen=True)
class Shadow:
    """A rollout's shadow step: copy ``percent`` % of the requests to the new revision for ``seconds`` at least."""

    percent: int
    seconds: float


@dataclass(frozen=True)
class Step:
    """One step of a rollout: copy requests to the new revision (``shadow``), give it ``set_weight`` percent, or
    wait ``pause_seconds``; none: wait for a person (``pause: {}``, until ``kubectl mlmodel promote`` or
    ``resume``)."""

    set_weight: int | None = None
    pause_seconds: float | None = None
    shadow: Shadow | None = None


@dataclass(frozen=True)
class Prometheus:
    """``spec.rollout.analysis.prometheus``: a PromQL query whose value must stay within ``min`` and ``max``."""

    address: str
    query: str
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class Analysis:
    """``spec.rollout.analysis``: the gates the canary is judged by at every interval, from the routers' own
    counts of its answers (and a Prometheus query, if any). Rates are percents, latencies milliseconds."""

    interval: float = DEFAULT_INTERVAL
    min_requests: int = DEFAULT_MIN_REQUESTS
    failure_limit: int = 0  # failed intervals allowed: one more aborts
    min_success_rate: float | None = None
    max_p99_ms: float | None = None
    max_p99_ratio: float | None = None  # the canary's p99 over the stable revision's, in the same interval
    prometheus: Prometheus | None = None
    # In shadow steps: the share of rows whose answers agree with the stable revision's (a regressor's within
    # absolute + relative * |stable's|), and the mean difference of their class probabilities.
    min_agreement: float | None = None
    tolerance: Tolerance = Tolerance()
    max_probability_delta: float | None = None
    # In live steps: the population stability index of the canary's predicted classes against the stable's.
    max_psi: float | None = None

    @property
    def compares(self) -> bool:
        """Whether a gate judges the answers compared in shadow steps."""
        return self.min_agreement is not None or self.max_probability_delta is not None


@dataclass(frozen=True)
class Rollout:
    """``spec.rollout``: how a new revision of the only variant replaces the one serving."""

    steps: tuple[Step, ...]
    scale_down_delay: float = DEFAULT_SCALE_DOWN_DELAY  # seconds the previous revision stays up after promotion
    analysis: Analysis | None = None


@dataclass(frozen=True)
class Mlflow:
    """``spec.mlflow``: the tracking server a registry modelUri is resolved on, instead of the operator's, with
    credentials from a Secret of the ModelDeployment's namespace; and how often an alias is looked up again."""

    tracking_uri: str | None = None
    credentials_secret: str | None = None
    poll_seconds: float | None = None  # None: the operator's (the chart's mlflow.pollInterval)


@dataclass(frozen=True)
class Defaults:
    """What the operator gives a ModelDeployment where its spec says nothing, for every ModelDeployment it serves
    (its settings ``--server-resources`` and ``--router-resources``): the resources of the server containers of a
    variant without ``resources``, and of the router containers without ``spec.routing.resources``. A spec's own
    resources replace these whole, as they replace the built-in ones."""

    server_resources: Mapping[str, Any] = field(default_factory=lambda: DEFAULT_SERVER_RESOURCES)
    router_resources: Mapping[str, Any] = field(default_factory=lambda: DEFAULT_ROUTER_RESOURCES)


@dataclass(frozen=True)
class ModelDeployment:
    name: str
    namespace: str
    uid: str
    generation: int
    variants: tuple[Variant, ...]
    api_key_secret: ApiKeySecret | None = None
    routing: Routing = Routing()
    max_request_bytes: int | None = None  # spec.maxRequestSize; None: the server's default, DEFAULT_MAX_REQUEST
    rollout: Rollout | None = None
    action: actions.Action | None = None  # what a person asks of the rollout (an annotation)
    mlflow: Mlflow = Mlflow()
    defaults: Defaults = Defaults()  # the operator's, for what the spec leaves unset

    @property
    def registered(self) -> tuple[Variant, ...]:
        """The variants whose modelUri names a registry's model, not yet pinned."""
        return tuple(v for v in self.variants if v.ref is not None)

    @property
    def request_limit(self) -> int:
        """The largest request body, in bytes, that the router and the servers take."""
        return DEFAULT_MAX_REQUEST if self.max_request_bytes is None else self.max_request_bytes

    def variant(self, name: str) -> Variant:
        """The variant called ``name``."""
        return next(v for v in self.variants if v.name == name)

    @property
    def routed(self) -> bool:
        """Traffic goes through a router: several variants, or a routing feature that needs one."""
        r = self.routing
        return len(self.variants) > 1 or r.always or bool(r.sticky_header or r.mirror or r.rate_limit)


def parse(body: Mapping[str, Any], *, default_image: str, defaults: Defaults = Defaults()) -> ModelDeployment:
    """The ModelDeployment in ``body`` (a resource as the API server returns it), with the operator's ``defaults``
    for what its spec leaves unset."""
    metadata = body.get("metadata", {})
    spec = body.get("spec") or {}
    items = spec.get("variants") or []
    if not items:
        raise SpecError("spec.variants: at least one variant is required")
    if len(items) > 10:
        raise SpecError(f"spec.variants: at most 10 variants, got {len(items)}")
    image = spec.get("image") or default_image
    variants = tuple(_variant(i, item, image, single=len(items) == 1) for i, item in enumerate(items))
    names = [v.name for v in variants]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SpecError(f"spec.variants: duplicate variant names: {', '.join(duplicates)}")
    total = sum(v.weight for v in variants)
    if total != 100:
        raise SpecError(f"spec.variants[*].weight must sum to 100 (percent of traffic), got {total}")
    secret = spec.get("apiKeySecret")
    routing = _routing(spec.get("routing") or {}, names)
    limit = spec.get("maxRequestSize")
    rollout = spec.get("rollout")
    if rollout is not None and len(variants) != 1:
        raise SpecError(f"spec.rollout: needs exactly one variant (the one it rolls out), got {len(variants)}")
    action = (metadata.get("annotations") or {}).get(_ACTION)
    try:
        requested = None if action is None else actions.parse(action)
    except actions.ActionError as err:
        raise SpecError(f"metadata.annotations[{_ACTION}]: {err}") from None
    return ModelDeployment(
        name=metadata["name"],
        namespace=metadata.get("namespace", "default"),
        uid=metadata.get("uid", ""),
        generation=int(metadata.get("generation", 0)),
        variants=variants,
        api_key_secret=ApiKeySecret(secret["name"], secret.get("key", "keys")) if secret else None,
        routing=routing,
        max_request_bytes=None if limit is None else _bytes("spec.maxRequestSize", limit),
        rollout=None if rollout is None else _rollout(rollout),
        action=requested,
        mlflow=_mlflow(spec.get("mlflow") or {}),
        defaults=defaults,
    )


def _mlflow(raw: Mapping[str, Any]) -> Mlflow:
    tracking = raw.get("trackingUri")
    if tracking is not None and urlparse(str(tracking)).scheme not in ("http", "https"):
        raise SpecError(f"spec.mlflow.trackingUri: an http:// or https:// URL, got {tracking!r}")
    secret = raw.get("credentialsSecret") or {}
    poll = raw.get("pollInterval")
    return Mlflow(
        tracking_uri=None if tracking is None else str(tracking),
        credentials_secret=secret.get("name"),
        poll_seconds=None if poll is None else duration("spec.mlflow.pollInterval", poll),
    )


def _rollout(raw: Mapping[str, Any]) -> Rollout:
    steps = []
    for i, item in enumerate(raw.get("steps") or []):
        if "setWeight" in item:
            weight = int(item["setWeight"])
            if not 0 <= weight <= 100:
                raise SpecError(f"spec.rollout.steps[{i}].setWeight: a percent from 0 to 100, got {weight}")
            steps.append(Step(set_weight=weight))
        elif "shadow" in item:
            where = f"spec.rollout.steps[{i}].shadow"
            shadow = item["shadow"] or {}
            percent = int(shadow.get("percent", 100))
            if not 1 <= percent <= 100:
                raise SpecError(f"{where}.percent: a percent from 1 to 100, got {percent}")
            if any(s.set_weight is not None for s in steps):
                raise SpecError(f"{where}: shadow steps come before the first setWeight")
            steps.append(Step(shadow=Shadow(percent, duration(f"{where}.duration", shadow.get("duration", "")))))
        elif "pause" in item and (item["pause"] or {}).get("duration") is not None:
            steps.append(
                Step(pause_seconds=duration(f"spec.rollout.steps[{i}].pause.duration", item["pause"]["duration"]))
            )
        elif "pause" in item:
            steps.append(Step())
        else:
            raise SpecError(
                f"spec.rollout.steps[{i}]: a step is shadow: {{duration: 1m}}, setWeight: N, "
                "pause: {duration: 30s} or pause: {}"
            )
    if not steps:
        raise SpecError("spec.rollout.steps: at least one step is required")
    delay = raw.get("scaleDownDelay")
    gates = None if raw.get("analysis") is None else _analysis(raw["analysis"])
    if any(s.shadow for s in steps) and (gates is None or not gates.compares):
        raise SpecError("spec.rollout.analysis: a shadow step needs agreement or probabilityDelta to judge it")
    return Rollout(
        tuple(steps),
        DEFAULT_SCALE_DOWN_DELAY if delay is None else duration("spec.rollout.scaleDownDelay", delay),
        gates,
    )


def _analysis(raw: Mapping[str, Any]) -> Analysis:
    where = "spec.rollout.analysis"

    def number(key: str, low: float, high: float | None = None) -> float | None:
        return _number(f"{where}.{key}", raw.get(key), low, high)

    prometheus = raw.get("prometheus")
    agreement, delta = raw.get("agreement") or {}, raw.get("probabilityDelta") or {}
    drift = raw.get("predictionDrift") or {}
    analysis = Analysis(
        interval=duration(f"{where}.interval", raw.get("interval", f"{DEFAULT_INTERVAL:.0f}s")),
        min_requests=int(number("minRequests", 1) or DEFAULT_MIN_REQUESTS),
        failure_limit=int(number("failureLimit", 0) or 0),
        min_success_rate=number("minSuccessRate", 0, 100),
        max_p99_ms=number("maxP99LatencyMs", 1),
        max_p99_ratio=number("maxP99LatencyRatio", 1),
        prometheus=None if prometheus is None else _prometheus(prometheus),
        min_agreement=_number(f"{where}.agreement.min", agreement.get("min"), 0, 1),
        tolerance=_tolerance(f"{where}.agreement.tolerance", agreement.get("tolerance") or {}),
        max_probability_delta=_number(f"{where}.probabilityDelta.max", delta.get("max"), 0, 1),
        max_psi=_number(f"{where}.predictionDrift.maxPSI", drift.get("maxPSI"), 0),
    )
    if analysis.interval < 1:
        raise SpecError(f"{where}.interval: at least 1s")
    gates = (
        analysis.min_success_rate,
        analysis.max_p99_ms,
        analysis.max_p99_ratio,
        analysis.prometheus,
        analysis.max_psi,
    )
    if all(gate is None for gate in gates) and not analysis.compares:
        raise SpecError(
            f"{where}: set at least one of minSuccessRate, maxP99LatencyMs, maxP99LatencyRatio, prometheus, "
            "agreement, probabilityDelta, predictionDrift"
        )
    return analysis


def _number(where: str, value: Any, low: float, high: float | None = None) -> float | None:
    """A number from ``low`` (to ``high``), or None when unset."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < low or (high and value > high):
        bounds = f"from {low:g} to {high:g}" if high else f"of at least {low:g}"
        raise SpecError(f"{where}: a number {bounds}, got {value!r}")
    return float(value)


def _tolerance(where: str, raw: Mapping[str, Any]) -> Tolerance:
    absolute = _number(f"{where}.absolute", raw.get("absolute"), 0) or 0.0
    return Tolerance(absolute, _number(f"{where}.relative", raw.get("relative"), 0, 1) or 0.0)


def _prometheus(raw: Mapping[str, Any]) -> Prometheus:
    where = "spec.rollout.analysis.prometheus"
    address, query = str(raw.get("address", "")), str(raw.get("query", ""))
    if urlparse(address).scheme not in ("http", "https") or not urlparse(address).netloc:
        raise SpecError(f"{where}.address: an http:// or https:// URL of Prometheus, got {address!r}")
    if not query.strip():
        raise SpecError(f"{where}.query: a PromQL query is required")
    bounds: dict[str, float] = {}
    for key in ("min", "max"):
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise SpecError(f"{where}.{key}: a number, got {value!r}")
        if value is not None:
            bounds[key] = float(value)
    if not bounds:
        raise SpecError(f"{where}: set min, max or both")
    return Prometheus(address.rstrip("/"), query, bounds.get("min"), bounds.get("max"))


def duration(where: str, value: Any) -> float:
    """``30s``, ``5m``, ``1h30m`` in seconds."""
    found = _DURATION.fullmatch(str(value))
    if not found or not any(found.groups()):
        raise SpecError(f"{where}: a duration such as 30s, 5m or 1h30m, got {value!r}")
    hours, minutes, seconds = (int(part or 0) for part in found.groups())
    return float(hours * 3600 + minutes * 60 + seconds)


def variant_of(item: Mapping[str, Any], image: str) -> Variant:
    """The variant ``item`` (a ``spec.variants`` entry, as recorded in a revision), alone in its spec."""
    return _variant(0, item, image, single=True)


def _routing(raw: Mapping[str, Any], variants: list[str]) -> Routing:
    mirror = raw.get("mirror")
    if mirror and mirror.get("variant") not in variants:
        raise SpecError(f"spec.routing.mirror.variant: no variant is called {mirror.get('variant')!r}")
    sticky = raw.get("stickyHeader")
    if sticky is not None and not _HEADER.fullmatch(str(sticky)):
        raise SpecError(f"spec.routing.stickyHeader: not an HTTP header name: {sticky!r}")
    limit = raw.get("rateLimit")
    return Routing(
        always=raw.get("router", "auto") == "always",
        replicas=int(raw.get("replicas", DEFAULT_ROUTER_REPLICAS)),
        resources=dict(raw.get("resources") or {}),
        sticky_header=str(sticky) if sticky else None,
        allow_override=bool(raw.get("allowOverride", False)),
        mirror=_mirror(mirror) if mirror else None,
        rate_limit=RateLimit(int(limit["requestsPerSecond"]), int(limit.get("burst", 0))) if limit else None,
        connections_per_client=int(raw.get("connectionsPerClient", DEFAULT_CONNECTIONS_PER_CLIENT)),
    )


def _mirror(raw: Mapping[str, Any]) -> Mirror:
    size = raw.get("bufferSize")
    buffer = DEFAULT_MIRROR_BUFFER if size is None else _bytes("spec.routing.mirror.bufferSize", size)
    tolerance = _tolerance("spec.routing.mirror.tolerance", raw.get("tolerance") or {})
    return Mirror(str(raw["variant"]), int(raw.get("percent", 100)), buffer, tolerance, bool(raw.get("compare", True)))


def _variant(index: int, item: Mapping[str, Any], image: str, *, single: bool) -> Variant:
    where = f"spec.variants[{index}]"
    uri = str(item.get("modelUri", ""))
    scheme = urlparse(uri).scheme
    if scheme not in SCHEMES:
        raise SpecError(f"{where}.modelUri: scheme must be one of {', '.join(sorted(SCHEMES))}, got {uri!r}")
    sha256 = item.get("modelSha256")
    allow_unpinned = bool(item.get("allowUnpinned", False))
    ref = None
    if scheme in REGISTRY_SCHEMES:
        try:
            ref = registry.parse(uri)
        except ValueError as err:
            raise SpecError(f"{where}.modelUri: {err}") from None
        for key in ("modelSha256", "allowUnpinned"):
            if item.get(key):
                raise SpecError(f"{where}.{key}: not for a registry modelUri, whose digest the operator pins")
    if scheme in REMOTE_SCHEMES and not sha256 and not allow_unpinned:
        raise SpecError(f"{where}.modelSha256: required for a remote modelUri unless allowUnpinned is true")
    if scheme == "pvc" and not (urlparse(uri).netloc and urlparse(uri).path.strip("/")):
        raise SpecError(f"{where}.modelUri: a pvc URI looks like pvc://<claim>/<path>, got {uri!r}")
    if "weight" not in item and not single:
        raise SpecError(f"{where}.weight: required when there are several variants")
    auto = item.get("autoscaling")
    autoscaling = None
    if auto:
        autoscaling = Autoscaling(
            int(auto.get("minReplicas", 1)),
            int(auto["maxReplicas"]),
            int(auto.get("targetCPUUtilizationPercentage", 80)),
        )
        if autoscaling.min_replicas > autoscaling.max_replicas:
            raise SpecError(f"{where}.autoscaling: minReplicas must not exceed maxReplicas")
        if "cpu" not in ((item.get("resources") or {}).get("requests") or {}):
            raise SpecError(
                f"{where}.resources.requests.cpu: required with autoscaling, which scales on CPU utilization"
            )
    env = tuple(dict(e) for e in item.get("env") or ())
    for i, entry in enumerate(env):
        if entry.get("name") in names.RESERVED_ENV:
            raise SpecError(
                f"{where}.env[{i}].name: {entry['name']} is set by the operator; "
                f"env must not set any of {', '.join(names.RESERVED_ENV)}"
            )
    cache = item.get("modelCacheSize")
    if cache is not None and scheme not in REMOTE_SCHEMES | REGISTRY_SCHEMES:
        raise SpecError(
            f"{where}.modelCacheSize: only for a downloaded model (an http, https, s3, models or runs modelUri)"
        )
    probes = item.get("probes") or {}
    return Variant(
        name=str(item["name"]),
        model_uri=uri,
        model_sha256=str(sha256).lower() if sha256 else None,
        allow_unpinned=allow_unpinned,
        replicas=int(item.get("replicas", 1)),
        weight=int(item.get("weight", 100)),
        image=item.get("image") or image,
        autoscaling=autoscaling,
        resources=dict(item.get("resources") or {}),
        env=env,
        pod_annotations=dict(item.get("podAnnotations") or {}),
        readiness=_tuning(probes.get("readiness")),
        liveness=_tuning(probes.get("liveness")),
        model_cache_bytes=DEFAULT_MODEL_CACHE if cache is None else _bytes(f"{where}.modelCacheSize", cache),
        ref=ref,
        pinned=_pinned(item.get(PINNED)),
    )


def _pinned(raw: Mapping[str, Any] | None) -> Pinned | None:
    if not raw:
        return None
    return Pinned(
        source=str(raw["source"]),
        version=raw.get("version"),
        run_id=raw.get("runId"),
        input_schema=raw.get("inputSchema"),
        skops_trusted=tuple(raw.get("skopsTrusted") or ()),
        credentials_secret=raw.get("credentialsSecret"),
    )


def _bytes(where: str, value: Any) -> int:
    """A Quantity of bytes (e.g. 1Gi, 500M, 2e9), rounded up to a whole byte as Kubernetes does."""
    amount = quantity.parse(value)
    if amount is None:
        raise SpecError(f"{where}: not a quantity of bytes such as 512Mi or 2Gi: {value!r}")
    if not 0 < amount <= _MAX_BYTES:
        raise SpecError(f"{where}: must be more than 0 and at most 1Ei, got {value!r}")
    return int(amount.to_integral_value(rounding=ROUND_CEILING))


def _tuning(raw: Mapping[str, Any] | None) -> ProbeTuning:
    raw = raw or {}
    return ProbeTuning(
        raw.get("initialDelaySeconds"),
        raw.get("periodSeconds"),
        raw.get("timeoutSeconds"),
        raw.get("failureThreshold"),
    )
