"""The only module that talks to the Kubernetes API: reads, watches, server-side apply under one field
manager, deletes.

A write the API server refuses raises ``Refused`` with its HTTP code and message, so that a pass
can record it and go on with the other children. Every request waits for the client-side rate
limit first. Every call (discovery's too) has a connect and a read timeout and no
retries of its own: against an API server that stops answering it fails within the two, and so
does the pass that made it (the next one tries again). A watch may stay quiet for as long as the
server keeps it open, and then for the read timeout.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from functools import cache
from typing import Any

from kubernetes import config, dynamic
from kubernetes import watch as watch_stream
from kubernetes.client import ApiClient, Configuration
from kubernetes.dynamic.exceptions import DynamicApiError, NotFoundError
from kubernetes.dynamic.resource import Resource

from mlmodel_operator import names, ratelimit
from mlmodel_operator.config import parse as parse_config

Obj = dict[str, Any]

# The kinds the operator owns, in the order stale ones are deleted (HPAs and PDBs before their targets).
CHILD_KINDS = (
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("v1", "ConfigMap"),
)


class Refused(Exception):
    """The API server refused a write: ``code`` is its HTTP status, ``message`` its explanation."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@cache
def _limiter() -> ratelimit.Limiter:
    """``--api-qps`` requests a second on average, ``--api-burst`` at once, from the settings."""
    settings = parse_config([])
    return ratelimit.Limiter(settings.api_qps, settings.api_burst)


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    _limiter().wait()
    try:
        yield
    except NotFoundError:
        raise
    except DynamicApiError as err:
        raise Refused(int(err.status), str(err.summary())) from err


class _Bounded(dynamic.DynamicClient):  # type: ignore[misc]
    """A dynamic client whose every request, unless it names its own, has the (connect, read) timeouts."""

    def __init__(self, client: ApiClient, timeouts: tuple[float, float]) -> None:
        self.timeouts = timeouts  # before discovery, which the constructor starts
        super().__init__(client)

    def request(self, method: str, path: str, body: object = None, **params: Any) -> Any:
        connect, read = self.timeouts
        quiet = float(params.get("timeout_seconds") or 0) if params.get("watch") else 0.0
        params.setdefault("_request_timeout", (connect, read + quiet))
        return super().request(method, path, body, **params)


@cache
def _client() -> dynamic.DynamicClient:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    settings = Configuration.get_default_copy()
    settings.retries = False  # urllib3 would retry a timed-out call up to 3 times
    return _Bounded(ApiClient(settings), parse_config([]).api_timeouts)


@cache
def _resource(api_version: str, kind: str) -> Resource:
    resource: Resource = _client().resources.get(api_version=api_version, kind=kind)
    return resource


def get(api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
    """One object, or ``None`` when it does not exist; ``Refused`` if the read is refused."""
    try:
        with _refusals():
            found: Obj = _resource(api_version, kind).get(name=name, namespace=namespace).to_dict()
    except NotFoundError:
        return None
    return found


def list_objects(
    api_version: str, kind: str, namespace: str | None, labels: Mapping[str, str]
) -> tuple[list[Obj], str]:
    """Objects of a kind in ``namespace`` (``None``: all) that carry all ``labels``, and the list's
    resourceVersion to watch from; ``Refused`` if the read is refused."""
    with _refusals():
        found = _resource(api_version, kind).get(namespace=namespace, label_selector=_selector(labels))
    return [item.to_dict() for item in found.items], str(found.metadata.resourceVersion)


def watch(
    api_version: str, kind: str, namespace: str | None, labels: Mapping[str, str], since: str, seconds: int
) -> Iterator[tuple[str, Obj]]:
    """The changes (``ADDED``, ``MODIFIED``, ``DELETED``, ``BOOKMARK``) after resourceVersion ``since``, as
    the API server sends them, until it ends the watch after ``seconds``. Raises once ``since`` is too
    old (410 Gone: list again) or the watch fails."""
    with _refusals():
        # As the dynamic client's watch does, but the events' objects stay plain JSON: wrapping each in
        # a ResourceInstance cost more CPU than the passes they trigger.
        events = watch_stream.Watch().stream(
            _resource(api_version, kind).get,
            namespace=namespace,
            label_selector=_selector(labels),
            resource_version=since,
            timeout_seconds=seconds,
            allow_watch_bookmarks=True,
            serialize=False,
            deserialize=False,
        )
        for event in events:
            yield event["type"], event["object"]


def _selector(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in labels.items())


def apply(obj: Obj, manager: str = names.FIELD_MANAGER) -> Obj:
    """Server-side apply ``obj`` as ``manager``, taking over conflicting fields; ``Refused`` if refused."""
    meta = obj["metadata"]
    with _refusals():
        applied: Obj = (
            _resource(obj["apiVersion"], obj["kind"])
            .server_side_apply(
                body=obj,
                name=meta["name"],
                namespace=meta["namespace"],
                field_manager=manager,
                force_conflicts=True,
            )
            .to_dict()
        )
    return applied


def patch_status(md: Mapping[str, Any], status: Obj) -> str | None:
    """Merge ``status`` into the ModelDeployment ``md``'s status subresource: the resourceVersion it then
    has (``None`` if it is gone); ``Refused`` if refused."""
    meta = md["metadata"]
    try:
        with _refusals():
            patched = _resource(names.API_VERSION, names.KIND).status.patch(
                body={"status": status},
                name=meta["name"],
                namespace=meta["namespace"],
                content_type="application/merge-patch+json",
            )
    except NotFoundError:
        return None
    return str(patched.metadata.resourceVersion)


def read_lease(namespace: str, name: str) -> tuple[Obj, str] | None:
    """A Lease's spec and resourceVersion, or ``None`` when there is none."""
    found = get("coordination.k8s.io/v1", "Lease", namespace, name)
    return (found.get("spec") or {}, found["metadata"]["resourceVersion"]) if found else None


def write_lease(namespace: str, name: str, spec: Obj, resource_version: str | None) -> bool:
    """Create the Lease (no ``resource_version``) or replace the one read at ``resource_version``.

    ``False`` when another writer got there first (a conflict, or it already exists).
    """
    body = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "namespace": namespace,
            **({"resourceVersion": resource_version} if resource_version else {}),
        },
        "spec": spec,
    }
    lease = _resource("coordination.k8s.io/v1", "Lease")
    try:
        with _refusals():
            if resource_version is None:
                lease.create(body=body, namespace=namespace)
            else:
                lease.replace(body=body, name=name, namespace=namespace)
    except Refused as err:
        if err.code == 409:
            return False
        raise
    return True


def delete(api_version: str, kind: str, namespace: str, name: str) -> None:
    """Delete one object; already gone is fine; ``Refused`` if refused."""
    with contextlib.suppress(NotFoundError), _refusals():
        _resource(api_version, kind).delete(name=name, namespace=namespace)


def event(md: Mapping[str, Any], kind: str, reason: str, message: str, now: str) -> None:
    """Record an Event on the ModelDeployment ``md`` (kind ``Normal`` or ``Warning``); ``Refused`` if refused."""
    meta = md["metadata"]
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
        },
        "type": kind,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": names.FIELD_MANAGER},
        "reportingComponent": names.FIELD_MANAGER,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    with _refusals():
        _resource("v1", "Event").create(body=body, namespace=meta["namespace"])
