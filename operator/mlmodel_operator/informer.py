"""Keep a ``cache.Store`` up to date with one kind of the operator's objects: list, then watch from the
list's resourceVersion, and list again when the watch cannot go on (client-go's reflector, in small)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from mlmodel_operator import cache, kube, names

LOG = logging.getLogger(__name__)
RETRY_SECONDS = (1, 2, 5, 10)  # between failed lists, then every 10 s
LABELS = {names.LABEL_MANAGED_BY: names.FIELD_MANAGER}


def run(
    store: cache.Store,
    api_version: str,
    kind: str,
    namespace: str | None,
    changed: Callable[[cache.Owner], None],
    stop: threading.Event,
    seconds: int,
    beat: Callable[[], None],
) -> None:
    """Until ``stop``: mirror ``kind`` (with the operator's label, in ``namespace`` or everywhere) into
    ``store``, and call ``changed`` with the owner of every object that changed. Each watch lasts
    ``seconds`` (the API server ends it; the next starts where it ended); ``beat`` marks progress:
    a list, an event, a watch that ended in time."""
    since: str | None = None
    failures = 0
    while not stop.is_set():
        try:
            if since is None:
                try:
                    items, since = kube.list_objects(api_version, kind, namespace, LABELS)
                except kube.Refused as err:  # passes report it until a list succeeds
                    store.fail(kind, err.code, err.message)
                    raise
                for each in store.replace(kind, namespace, items):
                    changed(each)
                failures = 0
                beat()
            for event, obj in kube.watch(api_version, kind, namespace, LABELS, since, seconds):
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
