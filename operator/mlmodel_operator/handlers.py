"""kopf handlers, watches and workers: when to reconcile. What reconciling means lives in ``reconcile``.

A pass runs when a spec changes (kopf's handlers), when the watches see one of a ModelDeployment's
children or pods change (a pod turning ready, a hand edit), and for every ModelDeployment once per
slow, jittered resync, the safety net. Passes read children and pods from the watches' cache, so a
steady ModelDeployment costs no API request.

No handler here needs kopf's finalizer, so deleting a ModelDeployment (or its namespace) never
waits for the operator: the children go with it through their owner references. That is why the
resync is one loop over the ModelDeployments kopf has seen, and not a per-object ``@kopf.timer``,
for which kopf puts its finalizer on every object (and takes it off again once no handler needs it).
"""

from __future__ import annotations

import functools
import http.server
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf

from mlmodel_operator import (
    actions,
    cache,
    config,
    informer,
    kube,
    liveness,
    metrics,
    names,
    reconcile,
    status,
    weights,
)

LOG = logging.getLogger(__name__)
MD = (names.GROUP, names.VERSION, names.PLURAL)
WATCHED_KINDS = (*kube.CHILD_KINDS, ("v1", "Pod"))
SYNC_TIMEOUT = 60  # at start, how long passes wait for the watches' first lists
COALESCE_SECONDS = 0.5  # a change the watches saw waits this long, so that a burst makes one pass
RETRY_MAX_SECONDS = 60  # the longest wait before retrying a pass whose writes the API server refused


@dataclass
class Watched:
    """The ModelDeployments kopf has seen (uid -> latest body and its per-object memo), the cache of their
    children, and the queue of passes to run; all until ``stop`` is set. One per run of the operator,
    in kopf's operator memo."""

    config: config.Config  # the operator's settings, from kopf's memo (``kopf.run(memo=...)``)
    stop: threading.Event = field(default_factory=threading.Event)
    objects: dict[str, tuple[dict[str, Any], kopf.Memo]] = field(default_factory=dict)
    uids: dict[cache.Owner, str] = field(default_factory=dict)
    store: cache.Store = field(default_factory=cache.Store)
    synced: threading.Event = field(default_factory=threading.Event)  # the watches have listed
    queue: cache.WorkQueue = field(default_factory=cache.WorkQueue)
    triggers: dict[str, str] = field(default_factory=dict)  # uid -> why it is queued
    passes: liveness.Progress = field(default_factory=liveness.Progress)
    watches: dict[str, liveness.Progress] = field(default_factory=dict)
    board: weights.Board = field(init=False)  # the routers' routes, for the weights endpoint
    source: tuple[str, int] | None = None  # where routers reach the weights endpoint (resolved at start)
    endpoint: http.server.ThreadingHTTPServer | None = None

    def __post_init__(self) -> None:
        # A router pod's report that brings it up to date is a change too: a pass may now delete what it left.
        self.board = weights.Board(listener=functools.partial(_changed, self))

    def enqueue(self, uid: str, trigger: str, delay: float = 0.0) -> None:
        self.triggers[uid] = trigger
        self.queue.add(uid, delay)


def _now() -> str:
    return datetime.now(UTC).strftime(status.TIMESTAMP)


def _thread(target: Any, *args: Any, name: str) -> None:
    threading.Thread(target=target, args=args, name=name, daemon=True).start()


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Settings, then the watches of every child kind and pods (passes start once they have listed),
    the workers and the resync loop."""
    # Handler progress goes to annotations: the status schema is strict and belongs to us.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=names.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=names.GROUP)
    settings.posting.enabled = False  # reconcile posts its own Events, only for real changes
    # kopf copies the operator's memo into each object's: every object's memo shares this one. Its
    # ``config`` holds the settings, parsed once by whoever runs the operator (``__main__``, a test).
    watched = memo.watched = Watched(memo.config)
    cfg = watched.config
    # kopf's calls are bounded like ours, each attempt as a whole (and the connect of a watch). A
    # watch that goes quiet is kopf's to reconnect, after settings.watching.inactivity_timeout
    # (70 s; the API server sends a bookmark every minute).
    settings.networking.request_timeout = sum(cfg.api_timeouts)
    settings.execution.max_workers = cfg.workers
    # The children and pods, and the names of everything of the child kinds (new children need no read).
    watches: list[tuple[informer.Mirror, tuple[str, str], bool]] = [(watched.store, k, False) for k in WATCHED_KINDS]
    watches += [(watched.store.names, k, True) for k in kube.CHILD_KINDS]
    for mirror, (api_version, kind), names_only in watches:
        what = f"{kind} names" if names_only else kind
        for namespace in cfg.namespaces or (None,):
            progress = watched.watches[f"the watch of {what}" + (f" in {namespace}" if namespace else "")] = (
                liveness.Progress()
            )
            args = (mirror, api_version, kind, namespace, functools.partial(_changed, watched), watched.stop)
            run = functools.partial(informer.run, names_only=names_only)
            _thread(run, *args, cfg.watch_seconds, progress.beat, name=f"watch-{what.replace(' ', '-')}")
    if cfg.weights_port:
        endpoint = weights.server(watched.board, cfg.weights_port)
        _thread(endpoint.serve_forever, name="weights")
        watched.endpoint = endpoint
    if cfg.weights_address:
        watched.source = weights.resolve(cfg.weights_address)  # fails the start loudly: routers need it
    _thread(_start, watched, name="start")


def _start(watched: Watched) -> None:
    """Once the watches have listed (or after ``SYNC_TIMEOUT``), let passes run: the workers, the resync."""
    deadline = time.monotonic() + SYNC_TIMEOUT

    def synced() -> bool:
        names = watched.store.names
        return all(watched.store.synced(kind) for _, kind in WATCHED_KINDS) and all(
            names.synced(kind) for _, kind in kube.CHILD_KINDS
        )

    while not synced() and time.monotonic() < deadline and not watched.stop.wait(0.1):
        pass
    watched.synced.set()
    for number in range(watched.config.workers):
        _thread(_work, watched, name=f"worker-{number}")
    _thread(_resync, watched, name="resync")


@kopf.on.cleanup()
def cleanup(memo: kopf.Memo, **_: Any) -> None:
    memo.watched.stop.set()
    if memo.watched.endpoint is not None:
        memo.watched.endpoint.shutdown()
        memo.watched.endpoint.server_close()


@kopf.on.probe(id="reconciling", errors=kopf.ErrorsMode.PERMANENT)
async def reconciling(memo: kopf.Memo, **_: Any) -> dict[str, float]:
    """kopf's liveness endpoint fails (500) once passes or a watch made no progress for their limit."""
    watched, cfg = memo.watched, memo.watched.config
    watch_limit = cfg.watch_seconds + cfg.api_timeouts[1] + 10
    ages = {"reconciling": (watched.passes.idle(), cfg.stall_seconds)}
    ages |= {what: (progress.idle(), watch_limit) for what, progress in watched.watches.items()}
    return liveness.check(ages)


@kopf.on.resume(*MD)
@kopf.on.create(*MD)
@kopf.on.update(*MD)
def on_change(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A new or changed spec: reconcile. Waiting for the variants needs no retries: each change of
    their pods or Deployments queues a pass."""
    verdict = _sync(memo, "change", lambda: body)
    assert verdict is not None  # kopf's body is there
    if verdict.invalid is not None:
        raise kopf.PermanentError(verdict.invalid)


@kopf.on.event(*MD)
async def on_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Every body kopf sees (the first listing too) is the one the next queued pass uses, and one with an action
    not taken yet queues a pass; a deleted ModelDeployment leaves the loop, and its metrics go with it. On kopf's
    event loop: a sync handler would queue every event of a thousand ModelDeployments, body and all, behind the
    passes in kopf's executor."""
    body, meta = event["object"], event["object"]["metadata"]
    owner = (meta.get("namespace", ""), meta["name"])
    if event["type"] == "DELETED":
        memo.watched.objects.pop(meta["uid"], None)
        memo.watched.uids.pop(owner, None)
        memo.watched.triggers.pop(meta["uid"], None)
        memo.watched.board.publish(owner, None)
        metrics.gone(*owner)
    else:
        memo.watched.objects[meta["uid"]] = (body, memo)
        memo.watched.uids[owner] = meta["uid"]
        if actions.pending(body):  # kubectl mlmodel promote, abort, ...: kopf's on.update does not see it
            memo.watched.enqueue(meta["uid"], "action")


def _changed(watched: Watched, owner: cache.Owner) -> None:
    """One of ``owner``'s children or pods changed: queue a pass (once kopf has seen the owner)."""
    uid = watched.uids.get(owner)
    if uid is not None:
        watched.enqueue(uid, "watch", COALESCE_SECONDS)


def _resync(watched: Watched) -> None:
    """Every resync period (jittered by ±20 %, so that operators spread out), queue a pass of every
    ModelDeployment seen: repair what no watch reported, and refresh the status."""
    while not watched.stop.wait(watched.config.resync_seconds * random.uniform(0.8, 1.2)):
        if not watched.objects:
            watched.passes.beat()  # nothing to pass over: an idle operator is live
        for uid in list(watched.objects):
            watched.enqueue(uid, "resync")


def _work(watched: Watched) -> None:
    """Run queued passes, one ModelDeployment at a time per worker, until stopped."""
    while not watched.stop.is_set():
        uid = watched.queue.get(timeout=1)
        if uid is None:
            continue
        assert isinstance(uid, str)
        try:
            body, memo = watched.objects.get(uid, ({}, None))
            if memo is not None:
                _sync(memo, watched.triggers.get(uid, "watch"), functools.partial(_latest, watched, uid))
        except Exception:  # the next change or resync tries again
            LOG.exception("pass of %s/%s failed", *cache.owner(body) or ("", uid))
        finally:
            watched.queue.done(uid)


def _latest(watched: Watched, uid: str) -> Mapping[str, Any] | None:
    """The newest body seen of ``uid``; ``None`` once it is gone or being deleted (in the foreground, say:
    its children must not come back)."""
    body = watched.objects.get(uid, ({}, None))[0]
    return body if body and not body["metadata"].get("deletionTimestamp") else None


def _sync(memo: kopf.Memo, trigger: str, body_of: Callable[[], Mapping[str, Any] | None]) -> reconcile.Verdict | None:
    """One pass, one at a time per ModelDeployment, on the body that is newest once it is this pass's
    turn (a pass that waited for a pass of a new spec must not apply the spec it had before), and
    its status written before the next pass starts."""
    watched = memo.watched
    watched.synced.wait(SYNC_TIMEOUT)  # a pass before the watches listed would read every child anew
    with memo.setdefault("lock", threading.Lock()):
        body = body_of()
        if body is None:
            return None
        metrics.RECONCILES.labels(trigger).inc()
        started = time.perf_counter()
        try:
            verdict = reconcile.sync(
                body,
                default_image=watched.config.server_image,
                router_image=watched.config.router_image,
                now=_now(),
                memory=memo,
                store=watched.store,
                access=watched.config.access,
                source=watched.source,
                registry=watched.config.registry,
                defaults=watched.config.defaults,
                reports=watched.board.reports((body["metadata"]["namespace"], body["metadata"]["name"])),
            )
            # The routers get the weights before the status says why: an abort's traffic is back on the stable
            # revision by the time `kubectl get md` shows it (the weights ConfigMap is already applied).
            if verdict.invalid is None:  # a bad spec keeps the weights its routers have
                meta = body["metadata"]
                watched.board.publish((meta["namespace"], meta["name"]), verdict.weights)
            if verdict.status is not None and not _written(memo, body, verdict.status):
                memo["written"] = (kube.patch_status(body, verdict.status), verdict.status)
        except Exception as err:
            metrics.ERRORS.labels(type(err).__name__).inc()
            raise
        finally:
            metrics.DURATION.observe(time.perf_counter() - started)
        watched.passes.beat()
        metrics.passed(body["metadata"]["namespace"], body["metadata"]["name"], memo["status"])
        memo["retries"] = memo.get("retries", 0) + 1 if verdict.retry else 0
        if verdict.wake is not None:  # a rollout's pause ends, or its previous revision is due to go
            watched.enqueue(body["metadata"]["uid"], "rollout", verdict.wake)
        if verdict.retry:  # as controller-runtime requeues an error: soon, then less and less often
            watched.enqueue(body["metadata"]["uid"], "retry", retry_delay(memo["retries"]))
        return verdict


def retry_delay(attempt: int) -> float:
    """Seconds before retrying a pass whose writes were refused ``attempt`` times in a row: 1, 2, 4 ... 60."""
    return float(min(RETRY_MAX_SECONDS, 2 ** (attempt - 1)))


def _written(memo: kopf.Memo, body: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """This status was written already, and ``body`` is from before that write (the watch has not
    caught up): writing it again would change nothing."""
    version, last = memo.get("written", (None, None))
    return last == status and cache.revision(body["metadata"].get("resourceVersion")) < cache.revision(version)
