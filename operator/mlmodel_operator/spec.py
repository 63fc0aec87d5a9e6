"""Parse a ModelDeployment once into frozen dataclasses.

The CRD's schema and CEL rules reject most bad specs at ``kubectl apply``; what gets
past them (or an operator running against an older CRD) raises ``SpecError``, which
names the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

REMOTE_SCHEMES = frozenset({"http", "https", "s3"})
SCHEMES = REMOTE_SCHEMES | {"file", "pvc"}


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
class ModelDeployment:
    name: str
    namespace: str
    uid: str
    generation: int
    variants: tuple[Variant, ...]
    api_key_secret: ApiKeySecret | None = None

    def variant(self, name: str) -> Variant:
        """The variant called ``name``."""
        return next(v for v in self.variants if v.name == name)


def parse(body: Mapping[str, Any], *, default_image: str) -> ModelDeployment:
    """The ModelDeployment in ``body`` (a resource as the API server returns it)."""
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
        raise SpecError(f"spec.variants[*].weight: weights must sum to 100, got {total}")
    secret = spec.get("apiKeySecret")
    return ModelDeployment(
        name=metadata["name"],
        namespace=metadata.get("namespace", "default"),
        uid=metadata.get("uid", ""),
        generation=int(metadata.get("generation", 0)),
        variants=variants,
        api_key_secret=ApiKeySecret(secret["name"], secret.get("key", "keys")) if secret else None,
    )


def _variant(index: int, item: Mapping[str, Any], image: str, *, single: bool) -> Variant:
    where = f"spec.variants[{index}]"
    uri = str(item.get("modelUri", ""))
    scheme = urlparse(uri).scheme
    if scheme not in SCHEMES:
        raise SpecError(f"{where}.modelUri: scheme must be one of {', '.join(sorted(SCHEMES))}, got {uri!r}")
    sha256 = item.get("modelSha256")
    allow_unpinned = bool(item.get("allowUnpinned", False))
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
        env=tuple(dict(e) for e in item.get("env") or ()),
        pod_annotations=dict(item.get("podAnnotations") or {}),
        readiness=_tuning(probes.get("readiness")),
        liveness=_tuning(probes.get("liveness")),
    )


def _tuning(raw: Mapping[str, Any] | None) -> ProbeTuning:
    raw = raw or {}
    return ProbeTuning(
        raw.get("initialDelaySeconds"),
        raw.get("periodSeconds"),
        raw.get("timeoutSeconds"),
        raw.get("failureThreshold"),
    )
