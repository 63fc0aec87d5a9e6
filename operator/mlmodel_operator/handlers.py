"""kopf handlers: when to reconcile. What reconciling means lives in ``reconcile``.

No handler here needs kopf's finalizer, so deleting a ModelDeployment (or its namespace) never
waits for the operator: the children go with it through their owner references. That is why
drift and status are refreshed by one resync loop over the ModelDeployments kopf has seen,
and not by a per-object ``@kopf.timer``, for which kopf puts its finalizer on every object
(and takes it off again once no handler needs it).
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf

from mlmodel_operator import config, kube, liveness, metrics, names, reconcile

CONFIG = config.parse([])
LOG = logging.getLogger(__name__)
MD = (names.GROUP, names.VERSION, names.PLURAL)
WAIT_SECONDS = 1  # while a rollout is under way: a variant that became ready gets its weight at once
WAIT_TIMEOUT = 600  # then the resync loop alone keeps watching a slow rollout, without retry writes


@dataclass
class Watched:
    """The ModelDeployments kopf has seen (uid -> latest body and its per-object memo), for the resync
    loop, which runs until ``stop`` is set. One per run of the operator, in kopf's operator memo."""

    stop: threading.Event = field(default_factory=threading.Event)
    objects: dict[str, tuple[dict[str, Any], kopf.Memo]] = field(default_factory=dict)
    progress: liveness.Progress = field(default_factory=liveness.Progress)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Handler progress goes to annotations: the status schema is strict and belongs to us.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=names.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=names.GROUP)
    settings.posting.enabled = False  # reconcile posts its own Events, only for real changes
    # kopf's calls are bounded like ours, each attempt as a whole (and the connect of a watch). A
    # watch that goes quiet is kopf's to reconnect, after settings.watching.inactivity_timeout
    # (70 s; the API server sends a bookmark every minute).
    settings.networking.request_timeout = sum(CONFIG.api_timeouts)
    # kopf copies the operator's memo into each object's: every object's memo shares this one.
    memo.watched = Watched()
    threading.Thread(target=_resync, args=(memo.watched,), name="resync", daemon=True).start()


@kopf.on.cleanup()
def cleanup(memo: kopf.Memo, **_: Any) -> None:
    memo.watched.stop.set()


@kopf.on.probe(id="reconciling", errors=kopf.ErrorsMode.PERMANENT)
async def reconciling(memo: kopf.Memo, **_: Any) -> dict[str, float]:
    """kopf's liveness endpoint fails (500) once the resync loop made no progress for the stall limit."""
    return liveness.check(memo.watched.progress.idle(), CONFIG.stall_seconds)


@kopf.on.resume(*MD, timeout=WAIT_TIMEOUT)
@kopf.on.create(*MD, timeout=WAIT_TIMEOUT)
@kopf.on.update(*MD, timeout=WAIT_TIMEOUT)
def on_change(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    """A new or changed spec: reconcile, then keep retrying until every variant is ready or has failed."""
    verdict = _sync(memo, "change", lambda: body, patch.status.update)
    assert verdict is not None  # kopf's body is there
    if verdict.invalid is not None:
        raise kopf.PermanentError(verdict.invalid)
    if not verdict.settled:
        raise kopf.TemporaryError("waiting for the variants to become ready", delay=WAIT_SECONDS)


def _resync(watched: Watched) -> None:
    """Every resync period (jittered by ±20 %, so that operators and objects spread out), a pass over
    each ModelDeployment seen: repair drift and refresh the status, writing only what changed."""
    while not watched.stop.wait(CONFIG.resync_seconds * random.uniform(0.8, 1.2)):
        objects = list(watched.objects.items())
        if not objects:
            watched.progress.beat()
        for uid, (body, memo) in objects:
            if watched.stop.is_set():
                return
            try:
                _sync(
                    memo, "resync", functools.partial(_latest, watched, uid), functools.partial(kube.patch_status, body)
                )
            except Exception:  # the next round tries again; kopf's handlers are not held up
                LOG.exception("resync of %s/%s failed", body["metadata"]["namespace"], body["metadata"]["name"])
            else:
                watched.progress.beat()


def _latest(watched: Watched, uid: str) -> Mapping[str, Any] | None:
    """The newest body seen of ``uid``; ``None`` once it is gone or being deleted (in the foreground, say:
    its children must not come back)."""
    body = watched.objects.get(uid, ({}, None))[0]
    return body if body and not body["metadata"].get("deletionTimestamp") else None


def _sync(
    memo: kopf.Memo,
    trigger: str,
    body_of: Callable[[], Mapping[str, Any] | None],
    write_status: Callable[[dict[str, Any]], object],
) -> reconcile.Verdict | None:
    """One pass, one at a time per ModelDeployment, on the body that is newest once it is this pass's
    turn (a resync that waited for a pass of a new spec must not apply the spec it had before), and
    its status written before the next pass starts."""
    with memo.setdefault("lock", threading.Lock()):
        body = body_of()
        if body is None:
            return None
        metrics.RECONCILES.labels(trigger).inc()
        started = time.perf_counter()
        try:
            verdict = reconcile.sync(
                body, default_image=CONFIG.server_image, router_image=CONFIG.router_image, now=_now(), memory=memo
            )
            if verdict.status is not None:
                write_status(verdict.status)
        except Exception as err:
            metrics.ERRORS.labels(type(err).__name__).inc()
            raise
        finally:
            metrics.DURATION.observe(time.perf_counter() - started)
        metrics.passed(body["metadata"]["namespace"], body["metadata"]["name"], memo["status"])
        return verdict


@kopf.on.event(*MD)
def on_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Every body kopf sees (the first listing too) is the one the resync loop checks next; a deleted
    ModelDeployment leaves the loop, and its metrics go with it."""
    body, meta = event["object"], event["object"]["metadata"]
    if event["type"] == "DELETED":
        memo.watched.objects.pop(meta["uid"], None)
        metrics.gone(meta.get("namespace", ""), meta["name"])
    else:
        memo.watched.objects[meta["uid"]] = (body, memo)
