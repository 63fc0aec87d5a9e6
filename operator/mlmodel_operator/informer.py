"""Keep a ``cache.Store`` up to date with one kind of the operator's objects (or ``cache.Names`` with
the names of all objects of a kind): list, then watch from the list's resourceVersion, and list again
when the watch cannot go on (client-go's reflector, in small)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

from mlmodel_operator import cache, kube, names

LOG = logging.getLogger(__name__)
RETRY_SECONDS = (1, 2, 5, 10)  # between failed lists, then every 10 s
LABELS = {names.LABEL_MANAGED_BY: names.FIELD_MANAGER}


class Mirror(Protocol):
    """What a watch keeps up to date: ``cache.Store`` or ``cache.Names``."""

    def replace(self, kind: str, namespace: str | None, items: Iterable[dict[str, Any]]) -> set[cache.Owner]: ...
    def put(self, kind: str, obj: Mapping[str, Any]) -> cache.Owner | None: ...
    def drop(self, kind: str, obj: Mapping[str, Any]) -> cache.Owner | None: ...
    def fail(self, kind: str, code: int, message: str) -> None: ...


def run(
    store: Mirror,
    api_version: str,
    kind: str,
    namespace: str | None,
    changed: Callable[[cache.Owner], None],
    stop: threading.Event,
    seconds: int,
    beat: Callable[[], None],
    *,
    names_only: bool = False,
) -> None:
    """Until ``stop``: mirror ``kind`` (with the operator's label, in ``namespace`` or everywhere) into
    ``store``, and call ``changed`` with the owner of every object that changed. Each watch lasts
    ``seconds`` (the API server ends it; the next starts where it ended); ``beat`` marks progress:
    a list, an event, a watch that ended in time. ``names_only``: every object of ``kind``, whoever
    made it, as metadata alone.

    Between a watch that broke and the list after it, ``store`` misses what changed meanwhile, as
    a reflector's does."""
    labels = None if names_only else LABELS
    since: str | None = None
    failures = 0
    while not stop.is_set():
        try:
            if since is None:
                try:
                    since, owners = _relist(store, api_version, kind, namespace, labels, names_only)
                except kube.Refused as err:  # passes report it until a list succeeds
                    store.fail(kind, err.code, err.message)
                    raise
                for each in owners:
                    changed(each)
                failures = 0
                beat()
            events = kube.watch(api_version, kind, namespace, labels, since, seconds, names_only=names_only)
            for event, obj in events:
                since = obj.get("metadata", {}).get("resourceVersion") or since
                beat()
                if event == "BOOKMARK":
                    continue
                owner: cache.Owner | None = store.drop(kind, obj) if event == "DELETED" else store.put(kind, obj)
                if owner is not None:
                    changed(owner)
                if stop.is_set():
                    return
            beat()
        except Exception as err:  # a refusal, a broken connection, 410 Gone: list again
            since, failures = None, failures + 1
            LOG.warning("list or watch of %s failed, listing again: %s", kind, err, exc_info=True)
            stop.wait(RETRY_SECONDS[min(failures, len(RETRY_SECONDS)) - 1])


def _relist(
    store: Mirror,
    api_version: str,
    kind: str,
    namespace: str | None,
    labels: Mapping[str, str] | None,
    names_only: bool,
) -> tuple[str, set[cache.Owner]]:
    """Replace what ``store`` has of ``kind`` with a fresh list, page by page: the list's
    resourceVersion, and the owners whose objects changed."""
    versions: list[str] = []

    def listed() -> Iterator[dict[str, Any]]:
        for page, version in kube.pages(api_version, kind, namespace, labels, names_only=names_only):
            versions.append(version)
            yield from page

    owners = store.replace(kind, namespace, listed())
    return versions[-1], owners
