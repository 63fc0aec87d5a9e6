"""Leader election against a real API server: one holder, a standby that takes over, no two winners."""

from __future__ import annotations

from mlmodel_operator import kube, leader

from conftest import Kubectl


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _holder(kubectl: Kubectl, namespace: str) -> tuple[str, int]:
    spec = kubectl.read("lease", "operator", namespace)["spec"]
    return spec.get("holderIdentity", ""), spec.get("leaseTransitions", 0)


def test_one_replica_leads_and_a_standby_takes_over_only_once_the_lease_stood_still(
    kubectl: Kubectl, namespace: str
) -> None:
    clock = Clock()
    a = leader.Elector(namespace, "operator", "a", clock)
    b = leader.Elector(namespace, "operator", "b", clock)
    assert a.try_once() and not b.try_once()
    assert _holder(kubectl, namespace) == ("a", 0)
    for _ in range(3):  # a renews; b sees the record change each time and keeps waiting
        clock.now += leader.LEASE_SECONDS - 1
        assert a.try_once() and not b.try_once()
    clock.now += leader.LEASE_SECONDS - 1  # a stopped renewing; not yet long enough for b
    assert not b.try_once()
    clock.now += 2
    assert b.try_once()
    assert _holder(kubectl, namespace) == ("b", 1)
    assert not a.try_once() and a.held is None  # a finds it lost
    b.release()  # a clean stop: a takes over at once
    assert a.try_once()
    assert _holder(kubectl, namespace) == ("a", 2)


def test_writes_that_lost_a_race_are_refused(kubectl: Kubectl, namespace: str) -> None:
    spec = leader.to_spec(leader.Record("a"))
    assert kube.write_lease(namespace, "operator", spec, None)
    assert not kube.write_lease(namespace, "operator", leader.to_spec(leader.Record("b")), None)  # it exists
    found = kube.read_lease(namespace, "operator")
    assert found is not None
    _, version = found
    assert kube.write_lease(
        namespace, "operator", leader.to_spec(leader.Record("a", renewed="2026-12-01T08:00:00.000000Z")), version
    )
    assert not kube.write_lease(namespace, "operator", leader.to_spec(leader.Record("b")), version)  # stale read
    assert _holder(kubectl, namespace) == ("a", 0)
