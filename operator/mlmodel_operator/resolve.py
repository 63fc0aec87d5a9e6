"""A ModelDeployment's registry models resolved, at most once per poll interval (one lookup per variant, however
many passes and pods): thin, ``mlflow_client`` talks to the registry, ``pins`` writes what it said.

A lookup that fails keeps the variant on what it was last pinned to (in this process, else in the status), and
the failure reaches the conditions with the registry's own message.
"""

from __future__ import annotations

import base64
import functools
import time
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mlmodel_operator import kube, mlflow_client, pins, registry, status
from mlmodel_operator.config import Registry
from mlmodel_operator.spec import ModelDeployment, Variant

TIMEOUT_SECONDS = 10.0  # each request to the tracking server
NOT_CONFIGURED = "RegistryNotConfigured"


@dataclass(frozen=True)
class Resolved:
    pins: dict[str, registry.Pin]  # by variant: resolved now, or kept from before a failed lookup
    failures: dict[str, status.Failure]  # by variant: the lookups that failed
    entries: list[dict[str, Any]] = field(default_factory=list)  # status.models
    wake: float | None = None  # seconds to the next lookup

    @property
    def problems(self) -> tuple[status.Failure, ...]:
        return tuple(self.failures.values())

    def missing(self, md: ModelDeployment) -> list[Variant]:
        """The registry variants with nothing to serve: never resolved."""
        return [v for v in md.registered if v.name not in self.pins]


Lookup = Callable[[registry.Ref, str, registry.Credentials | None], registry.Pin]


def pins_of(
    md: ModelDeployment,
    previous: Mapping[str, Any],
    memory: MutableMapping[str, Any],
    settings: Registry,
    lookup: Lookup | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Resolved:
    """Resolve ``md``'s registry variants whose last lookup is older than the poll interval; reuse the others'."""
    lookup = lookup or _lookup(memory.setdefault("digests", {}))
    poll = md.mlflow.poll_seconds or settings.poll_seconds
    # By variant: its last lookup (what it was asked, when, and what came of it), and its last pin found.
    kept: dict[str, tuple[tuple[str, ...], float, registry.Pin | registry.RegistryError]] = memory.setdefault(
        "lookups", {}
    )
    good: dict[str, tuple[tuple[str, ...], registry.Pin]] = memory.setdefault("pins", {})
    credentials = functools.cache(functools.partial(_credentials, md))  # the Secret read once, if at all
    found: dict[str, registry.Pin] = {}
    failures: dict[str, status.Failure] = {}
    now = clock()
    wake = poll
    for variant in md.registered:
        assert variant.ref is not None
        tracking = md.mlflow.tracking_uri or settings.tracking_uri
        if tracking is None:
            failures[variant.name] = status.Failure(NOT_CONFIGURED, f"{variant.name}: {_unconfigured(variant)}")
            continue
        tracking = in_namespace(tracking, md.namespace)
        key = (variant.model_uri, tracking, md.mlflow.credentials_secret or "")
        last = kept.get(variant.name)
        if last is not None and last[0] == key and now - last[1] < poll:
            result = last[2]
            wake = min(wake, poll - (now - last[1]))
        else:
            result = _resolve(variant.ref, tracking, lookup, credentials)
            kept[variant.name] = (key, now, result)
        if isinstance(result, registry.Pin):
            found[variant.name], good[variant.name] = result, (key, result)
            continue
        message = f"{variant.name}: {variant.model_uri}: {result.message}"
        failures[variant.name] = status.Failure(result.reason, message)
        pinned = good.get(variant.name)
        before = pinned[1] if pinned and pinned[0] == key else pins.recorded(previous, variant.name, variant.model_uri)
        if before is not None:
            found[variant.name] = before
    entries = [pins.entry(v.name, v.model_uri, found[v.name]) for v in md.registered if v.name in found]
    return Resolved(found, failures, entries, wake)


def in_namespace(tracking: str, namespace: str) -> str:
    """``tracking`` as the operator reaches it from its own namespace: a Service's bare name (``http://mlflow:5000``)
    is the one in the ModelDeployment's namespace, as its pods (and the pinned file's URL) would have it."""
    parts = urlsplit(tracking)
    host = parts.hostname or ""
    if not host or "." in host or ":" in host or host == "localhost":
        return tracking
    netloc = parts.netloc.replace(host, f"{host}.{namespace}", 1)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _unconfigured(variant: Variant) -> str:
    return (
        f"{variant.model_uri} names a registry model, but no tracking server is set: "
        "set spec.mlflow.trackingUri, or the chart's mlflow.trackingUri"
    )


def _resolve(
    ref: registry.Ref, tracking: str, lookup: Lookup, credentials: Callable[[], registry.Credentials | None]
) -> registry.Pin | registry.RegistryError:
    try:
        return lookup(ref, tracking, credentials())
    except registry.RegistryError as err:
        return err


def _credentials(md: ModelDeployment) -> registry.Credentials | None:
    """The ModelDeployment's Secret's token, or username and password, for the tracking server, and its S3 store's
    keys (the AWS SDK's names); one kind at least. Never from another namespace."""
    name = md.mlflow.credentials_secret
    if name is None:
        return None
    try:
        secret = kube.get("v1", "Secret", md.namespace, name)
    except kube.Refused as err:
        raise registry.RegistryError(registry.CREDENTIALS, f"cannot read Secret {name}: {err.message}") from None
    where = f"Secret {name} (spec.mlflow.credentialsSecret)"
    if secret is None:
        raise registry.RegistryError(registry.CREDENTIALS, f"{where} does not exist")
    data = {key: base64.b64decode(value).decode() for key, value in (secret.get("data") or {}).items()}
    s3 = registry.s3_keys(data, where)
    if "token" in data:
        return registry.Credentials(token=data["token"], s3=s3)
    if "username" in data and "password" in data:
        return registry.Credentials(username=data["username"], password=data["password"], s3=s3)
    if s3 is not None:
        return registry.Credentials(s3=s3)
    raise registry.RegistryError(
        registry.CREDENTIALS,
        f"{where} needs a token key, or username and password (the tracking server's), or an S3 store's "
        f"{registry.S3_KEYS}",
    )


def _lookup(digests: MutableMapping[str, str]) -> Lookup:
    def lookup(ref: registry.Ref, tracking: str, credentials: registry.Credentials | None) -> registry.Pin:
        return mlflow_client.resolve(ref, tracking, credentials, timeout=TIMEOUT_SECONDS, digests=digests)

    return lookup
