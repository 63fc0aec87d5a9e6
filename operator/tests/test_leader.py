"""Leader election's pure core: who writes what to the Lease, and when; and a holder whose API server hangs."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from mlmodel_operator import config, kube, leader
from mlmodel_operator.leader import Record, Seen, decide

T = "2026-12-01T08:00:00.000000Z"


def test_no_lease_is_created_by_the_first_to_look() -> None:
    seen, wanted = decide(Seen(), None, "a", 100.0, T)
    assert wanted == Record("a", acquired=T, renewed=T, transitions=0)
    assert seen.record is None


def test_the_holder_renews_and_keeps_its_acquire_time() -> None:
    held = Record("a", acquired="then", renewed="then", transitions=3)
    _, wanted = decide(Seen(), held, "a", 100.0, T)
    assert wanted == Record("a", acquired="then", renewed=T, transitions=3)


def test_a_standby_waits_while_the_record_changes_and_takes_over_once_it_stood_still_for_the_duration() -> None:
    held = Record("a", acquired="then", renewed="r1", transitions=3)
    seen, wanted = decide(Seen(), held, "b", 100.0, T)
    assert wanted is None
    seen, wanted = decide(seen, held, "b", 100.0 + leader.LEASE_SECONDS - 0.1, T)
    assert wanted is None  # unchanged, but not yet for the whole duration
    renewed = Record("a", acquired="then", renewed="r2", transitions=3)
    seen, wanted = decide(seen, renewed, "b", 100.0 + leader.LEASE_SECONDS + 1, T)
    assert wanted is None and seen.since == 100.0 + leader.LEASE_SECONDS + 1  # a renewal restarts the wait
    _, wanted = decide(seen, renewed, "b", 100.0 + 2 * leader.LEASE_SECONDS + 1.1, T)
    assert wanted == Record("b", acquired=T, renewed=T, transitions=4)


def test_the_clocks_of_the_replicas_need_not_agree() -> None:
    """The standby measures on its own clock from when it saw the record: renewTime is never compared."""
    stale_looking = Record("a", acquired="1999-01-01T00:00:00Z", renewed="1999-01-01T00:00:00Z")
    _, wanted = decide(Seen(), stale_looking, "b", 5.0, T)
    assert wanted is None


def test_a_released_lease_is_taken_at_once() -> None:
    held = Record("a", acquired="then", renewed="r", transitions=1)
    left = leader.released(held)
    assert left.holder is None and left.duration == 1
    _, wanted = decide(Seen(), left, "b", 0.0, T)
    assert wanted == Record("b", acquired=T, renewed=T, transitions=2)


def test_the_record_round_trips_through_the_lease_spec() -> None:
    record = Record("a", duration=15, acquired="x", renewed="y", transitions=2)
    spec = leader.to_spec(record)
    assert spec == {
        "holderIdentity": "a",
        "leaseDurationSeconds": 15,
        "acquireTime": "x",
        "renewTime": "y",
        "leaseTransitions": 2,
    }
    assert leader.from_spec(spec) == record
    assert "holderIdentity" not in leader.to_spec(leader.released(record))


def test_leader_election_settings() -> None:
    env = {"LEADER_ELECTION": "true", "POD_NAMESPACE": "mlmodel-system", "LEADER_ELECTION_ID": "mlmodel-operator"}
    cfg = config.parse([], env)
    assert (cfg.leader_election, cfg.lease_namespace, cfg.lease_name) == (True, "mlmodel-system", "mlmodel-operator")
    assert not config.parse(["--no-leader-election"], env).leader_election
    assert not config.parse([], {}).leader_election


def test_a_renewal_that_hangs_never_outlasts_the_renew_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The API server stops answering after one renewal: every later call's timeout is what is left of
    the renew deadline, and the holder gives up by then, before a standby may take the Lease over."""
    now = [0.0]
    timeouts: list[float | None] = []
    lease = leader.to_spec(Record("me", acquired=T, renewed=T))

    def read_lease(namespace: str, name: str, timeout: float | None = None) -> tuple[dict[str, Any], str]:
        timeouts.append(timeout)
        if len(timeouts) > 1:  # hangs for as long as it may, then times out
            now[0] += timeout or 30.0
            raise TimeoutError("read timed out")
        return lease, "1"

    monkeypatch.setattr(kube, "read_lease", read_lease)
    monkeypatch.setattr(kube, "write_lease", lambda *args: True)
    monkeypatch.setattr(leader, "RETRY_SECONDS", 0.001)
    elector = leader.Elector("ns", "lease", "me", clock=lambda: now[0])
    lost, stop = threading.Event(), threading.Event()
    elector.keep(lost, stop)
    assert lost.is_set() and stop.is_set()
    assert timeouts[0] == pytest.approx(leader.RENEW_DEADLINE_SECONDS)
    assert all(t is not None and t <= leader.RENEW_DEADLINE_SECONDS for t in timeouts)
    assert now[0] <= leader.RENEW_DEADLINE_SECONDS + 0.1 < leader.LEASE_SECONDS
