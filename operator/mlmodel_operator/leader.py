"""Leader election on a ``coordination.k8s.io`` Lease, the way client-go's leaderelection does it.

One replica holds the Lease and reconciles; the others wait. The holder renews the Lease every
``RETRY_SECONDS``; a standby takes it over once it has seen the same record, unrenewed, for the
Lease's duration (measured on its own clock, so the replicas' clocks need not agree). Writes
carry the ``resourceVersion`` they read, so two standbys never both win. A holder that cannot
renew for ``RENEW_DEADLINE_SECONDS`` stops (the process exits and restarts as a standby) before
anyone else may take over; on a clean stop it releases the Lease so a standby takes over at once.

``decide`` is the pure core; ``Elector`` does the reads and writes through ``kube``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from mlmodel_operator import kube

LEASE_SECONDS = 15
RENEW_DEADLINE_SECONDS = 10
RETRY_SECONDS = 2
LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Record:
    """The Lease's spec: who holds it, for how long, since when, and how often it changed hands."""

    holder: str | None
    duration: int = LEASE_SECONDS
    acquired: str | None = None
    renewed: str | None = None
    transitions: int = 0


@dataclass(frozen=True)
class Seen:
    """The record a replica last saw, and when (its monotonic clock) it saw it change."""

    record: Record | None = None
    since: float = 0.0


def decide(seen: Seen, record: Record | None, me: str, now: float, stamp: str) -> tuple[Seen, Record | None]:
    """What ``me`` writes to hold the Lease (``None``: nothing, someone else holds it), and what it has seen.

    ``record`` is the Lease as read (``None`` if there is none), ``now`` a monotonic time and
    ``stamp`` the wall-clock time to write.
    """
    if record != seen.record:
        seen = Seen(record, now)
    if record is None:
        return seen, Record(me, acquired=stamp, renewed=stamp)
    if record.holder == me:
        return seen, replace(record, renewed=stamp)
    if record.holder and now - seen.since < record.duration:
        return seen, None
    return seen, Record(me, acquired=stamp, renewed=stamp, transitions=record.transitions + 1)


def released(record: Record) -> Record:
    """The record a holder leaves when it stops: no holder, and a duration of one second."""
    return replace(record, holder=None, duration=1)


def to_spec(record: Record) -> dict[str, Any]:
    spec = {
        "holderIdentity": record.holder,
        "leaseDurationSeconds": record.duration,
        "acquireTime": record.acquired,
        "renewTime": record.renewed,
        "leaseTransitions": record.transitions,
    }
    return {k: v for k, v in spec.items() if v is not None}


def from_spec(spec: Mapping[str, Any]) -> Record:
    return Record(
        holder=spec.get("holderIdentity") or None,
        duration=int(spec.get("leaseDurationSeconds") or LEASE_SECONDS),
        acquired=spec.get("acquireTime"),
        renewed=spec.get("renewTime"),
        transitions=int(spec.get("leaseTransitions") or 0),
    )


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Elector:
    """Acquire, keep and release the Lease ``namespace/name`` as ``identity``."""

    def __init__(self, namespace: str, name: str, identity: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.namespace, self.name, self.identity, self.clock = namespace, name, identity, clock
        self.seen = Seen()
        self.held: Record | None = None  # the record as last written by us, while we lead

    def try_once(self, until: float | None = None) -> bool:
        """One read and, where it is ours to take or keep, one write: whether we lead now. ``until``: a
        time on ``clock`` by which both must be done (each call's timeout is what is left)."""

        def left() -> float | None:
            return None if until is None else max(until - self.clock(), 0.1)

        found = kube.read_lease(self.namespace, self.name, left())
        record = from_spec(found[0]) if found else None
        self.seen, wanted = decide(self.seen, record, self.identity, self.clock(), _stamp())
        if wanted is None:
            self.held = None
            return False
        written = kube.write_lease(self.namespace, self.name, to_spec(wanted), found[1] if found else None, left())
        self.held = wanted if written else None
        if written and (record is None or record.holder != self.identity):
            LOG.info("leading: took the Lease %s/%s as %s", self.namespace, self.name, self.identity)
        return written

    def acquire(self) -> None:
        """Wait until we lead."""
        LOG.info("standing by for the Lease %s/%s as %s", self.namespace, self.name, self.identity)
        while not self._attempt():
            time.sleep(RETRY_SECONDS)

    def keep(self, lost: threading.Event, stop: threading.Event) -> None:
        """Renew until ``stop``; set ``lost`` (and ``stop``) when no renewal succeeded for the deadline."""
        renewed = self.clock()
        while not stop.wait(RETRY_SECONDS):
            # A renewal that hangs must not outlast the deadline: past it, a standby may soon take over.
            if self._attempt(renewed + RENEW_DEADLINE_SECONDS):
                renewed = self.clock()
            elif self.clock() - renewed > RENEW_DEADLINE_SECONDS or (self.held is None and self._taken()):
                LOG.error("lost the Lease %s/%s: stopping", self.namespace, self.name)
                lost.set()
                stop.set()
                return

    def release(self) -> None:
        """Leave the Lease to a standby at once (a clean stop)."""
        if self.held is None:
            return
        found = kube.read_lease(self.namespace, self.name)
        record = from_spec(found[0]) if found else None
        if found and record and record.holder == self.identity:
            kube.write_lease(self.namespace, self.name, to_spec(released(record)), found[1])
            LOG.info("released the Lease %s/%s", self.namespace, self.name)
        self.held = None

    def _attempt(self, until: float | None = None) -> bool:
        try:
            return self.try_once(until)
        except Exception:  # an API error is a failed attempt: retried, and counted against the deadline
            LOG.exception("the Lease %s/%s could not be read or written", self.namespace, self.name)
            return False

    def _taken(self) -> bool:
        """Someone else holds the Lease now (we wrote nothing this round because it is theirs)."""
        return self.seen.record is not None and self.seen.record.holder not in (None, self.identity)
