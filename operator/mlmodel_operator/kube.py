"""The only module that talks to the Kubernetes API: reads, watches, server-side apply under one field
manager, deletes.

``configure`` sets the rate limit and the timeouts from the operator's settings, before the first call.
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
from mlmodel_operator.config import Config

Obj = dict[str, Any]
PAGE = 500  # objects per list request, as client-go's pager
_PARTIAL = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
_PARTIAL_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"

# The kinds the operator owns, in the order stale ones are deleted (HPAs and PDBs before their targets).
CHILD_KINDS = (
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("v1", "ConfigMap"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
)


class Refused(Exception):
    """The API server refused a write: ``code`` is its HTTP status, ``message`` its explanation."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


_settings: Config | None = None
_limiter: ratelimit.Limiter | None = None


def configure(settings: Config) -> None:
    """Use ``settings``' rate limit (``--api-qps`` requests a second on average, ``--api-burst`` at once)
    and timeouts for every call from now on: once, before the first."""
    global _settings, _limiter
    _settings, _limiter = settings, ratelimit.Limiter(settings.api_qps, settings.api_burst)
    _client.cache_clear()
    _resource.cache_clear()


def _configured() -> tuple[Config, ratelimit.Limiter]:
    if _settings is None or _limiter is None:
        raise RuntimeError("kube.configure() was not called")
    return _settings, _limiter


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    _configured()[1].wait()
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
    return _Bounded(ApiClient(settings), _configured()[0].api_timeouts)


@cache
def _resource(api_version: str, kind: str) -> Resource:
    resource: Resource = _client().resources.get(api_version=api_version, kind=kind)
    return resource


def _plain(_client: object, data: Obj) -> Obj:
    """The response as the JSON it is: the dynamic client's ResourceInstance wrapping (and unwrapping
    with ``to_dict``) cost more CPU than the passes that made the requests."""
    return data


def get(api_version: str, kind: str, namespace: str, name: str, timeout: float | None = None) -> Obj | None:
    """One object, or ``None`` when it does not exist; ``Refused`` if the read is refused. ``timeout``:
    seconds for the whole call, instead of the settings' connect and read timeouts."""
    bound = {"_request_timeout": timeout} if timeout else {}
    try:
        with _refusals():
            found: Obj = _resource(api_version, kind).get(name=name, namespace=namespace, serializer=_plain, **bound)
    except NotFoundError:
        return None
    return found


def pages(
    api_version: str, kind: str, namespace: str | None, labels: Mapping[str, str] | None, *, names_only: bool = False
) -> Iterator[tuple[list[Obj], str]]:
    """Objects of a kind in ``namespace`` (``None``: all) that carry all ``labels`` (``None``: any), a
    page of ``PAGE`` at a time, each with the list's resourceVersion to watch from (client-go's pager:
    a list of thousands never sits in memory whole). ``names_only``: their metadata alone
    (``PartialObjectMetadata``). ``Refused`` if a read is refused."""
    token = None
    while True:
        with _refusals():
            page: Obj = _resource(api_version, kind).get(
                namespace=namespace,
                label_selector=_selector(labels),
                limit=PAGE,
                _continue=token,
                header_params={"Accept": _PARTIAL_LIST if names_only else "application/json"},
                serializer=_plain,
            )
        items = page.get("items") or []
        if not names_only:  # a list's items come without them (client-go's typed lists add them too)
            for item in items:
                item.setdefault("apiVersion", api_version)
                item.setdefault("kind", kind)
        yield items, str(page["metadata"]["resourceVersion"])
        token = page["metadata"].get("continue")
        if not token:
            return


def watch(
    api_version: str,
    kind: str,
    namespace: str | None,
    labels: Mapping[str, str] | None,
    since: str,
    seconds: int,
    *,
    names_only: bool = False,
) -> Iterator[tuple[str, Obj]]:
    """The changes (``ADDED``, ``MODIFIED``, ``DELETED``, ``BOOKMARK``) after resourceVersion ``since``, as
    the API server sends them, until it ends the watch after ``seconds``; ``names_only`` as ``pages``.
    Raises once ``since`` is too old (410 Gone: list again) or the watch fails."""
    with _refusals():
        # As the dynamic client's watch does, but the events' objects stay plain JSON (see ``_plain``).
        events = watch_stream.Watch().stream(
            _resource(api_version, kind).get,
            namespace=namespace,
            label_selector=_selector(labels),
            resource_version=since,
            timeout_seconds=seconds,
            allow_watch_bookmarks=True,
            header_params={"Accept": _PARTIAL if names_only else "application/json"},
            serialize=False,
            deserialize=False,
        )
        for event in events:
            yield event["type"], event["object"]


def _selector(labels: Mapping[str, str] | None) -> str | None:
    return ",".join(f"{k}={v}" for k, v in labels.items()) if labels else None


def apply(obj: Obj, manager: str = names.FIELD_MANAGER) -> Obj:
    """Server-side apply ``obj`` as ``manager``, taking over conflicting fields; ``Refused`` if refused."""
    meta = obj["metadata"]
    with _refusals():
        applied: Obj = _resource(obj["apiVersion"], obj["kind"]).server_side_apply(
            body=obj,
            name=meta["name"],
            namespace=meta["namespace"],
            field_manager=manager,
            force_conflicts=True,
            serializer=_plain,
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
                serializer=_plain,
            )
    except NotFoundError:
        return None
    return str(patched["metadata"]["resourceVersion"])


def read_lease(namespace: str, name: str, timeout: float | None = None) -> tuple[Obj, str] | None:
    """A Lease's spec and resourceVersion, or ``None`` when there is none."""
    found = get("coordination.k8s.io/v1", "Lease", namespace, name, timeout)
    return (found.get("spec") or {}, found["metadata"]["resourceVersion"]) if found else None


def write_lease(
    namespace: str, name: str, spec: Obj, resource_version: str | None, timeout: float | None = None
) -> bool:
    """Create the Lease (no ``resource_version``) or replace the one read at ``resource_version``, within
    ``timeout`` seconds if given (as ``get``).

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
    bound = {"_request_timeout": timeout} if timeout else {}
    try:
        with _refusals():
            if resource_version is None:
                lease.create(body=body, namespace=namespace, serializer=_plain, **bound)
            else:
                lease.replace(body=body, name=name, namespace=namespace, serializer=_plain, **bound)
    except Refused as err:
        if err.code == 409:
            return False
        raise
    return True


def delete(api_version: str, kind: str, namespace: str, name: str) -> None:
    """Delete one object; already gone is fine; ``Refused`` if refused."""
    with contextlib.suppress(NotFoundError), _refusals():
        _resource(api_version, kind).delete(name=name, namespace=namespace, serializer=_plain)


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
        _resource("v1", "Event").create(body=body, namespace=meta["namespace"], serializer=_plain)
