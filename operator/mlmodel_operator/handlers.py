"""kopf handlers: when to reconcile. What reconciling means lives in ``reconcile``."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import kopf
from prometheus_client import start_http_server

from mlmodel_operator import config, metrics, names, reconcile

CONFIG = config.parse([])
MD = (names.GROUP, names.VERSION, names.PLURAL)
WAIT_SECONDS = 1  # while a rollout is under way: a variant that became ready gets its weight at once
WAIT_TIMEOUT = 600  # then the timer alone keeps watching a slow rollout, without retry writes


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Handler progress goes to annotations: the status schema is strict and belongs to us.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=names.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=names.GROUP)
    settings.posting.enabled = False  # reconcile posts its own Events, only for real changes
    if CONFIG.metrics_port:
        start_http_server(CONFIG.metrics_port)


@kopf.on.resume(*MD, timeout=WAIT_TIMEOUT)
@kopf.on.create(*MD, timeout=WAIT_TIMEOUT)
@kopf.on.update(*MD, timeout=WAIT_TIMEOUT)
def on_change(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    """A new or changed spec: reconcile, then keep retrying until every variant is ready or has failed."""
    verdict = _sync(body, patch, memo, "change")
    if verdict.invalid is not None:
        raise kopf.PermanentError(verdict.invalid)
    if not verdict.settled:
        raise kopf.TemporaryError("waiting for the variants to become ready", delay=WAIT_SECONDS)


@kopf.timer(*MD, interval=CONFIG.resync_seconds, sharp=False)
def on_timer(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    """Every few seconds: repair drift and refresh the status, writing only what changed."""
    _sync(body, patch, memo, "timer")


def _sync(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, trigger: str) -> reconcile.Verdict:
    metrics.RECONCILES.labels(trigger).inc()
    started = time.perf_counter()
    lock = memo.setdefault("lock", threading.Lock())  # one pass at a time per ModelDeployment
    try:
        with lock:
            verdict = reconcile.sync(
                body, default_image=CONFIG.server_image, router_image=CONFIG.router_image, now=_now(), memory=memo
            )
    except Exception as err:
        metrics.ERRORS.labels(type(err).__name__).inc()
        raise
    finally:
        metrics.DURATION.observe(time.perf_counter() - started)
    if verdict.status is not None:
        patch.status.update(verdict.status)
    metrics.passed(body.metadata.namespace or "", body.metadata.name or "", memo["status"])
    return verdict


@kopf.on.event(*MD)
def on_event(event: kopf.RawEvent, **_: Any) -> None:
    """A deleted ModelDeployment's metrics go with it (an event handler, so no finalizer)."""
    if event["type"] == "DELETED":
        meta = event["object"]["metadata"]
        metrics.gone(meta.get("namespace", ""), meta["name"])
