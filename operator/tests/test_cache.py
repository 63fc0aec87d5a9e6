"""The watches' cache and the work queue (no API server needed: both are plain data structures)."""

from __future__ import annotations

import threading
import time
from typing import Any

from mlmodel_operator import cache, names


def obj(name: str, md: str = "iris", version: str = "1", **labels: str) -> dict[str, Any]:
    meta = {
        "name": name,
        "namespace": "ml",
        "resourceVersion": version,
        "labels": {names.LABEL_INSTANCE: md, names.LABEL_MANAGED_BY: names.FIELD_MANAGER, **labels},
        "managedFields": [{"manager": names.FIELD_MANAGER}, {"manager": "kubectl"}],
    }
    return {"metadata": meta, "spec": {"replicas": 1}, "status": {"phase": "Running", "hostIP": "10.0.0.1"}}


def labels(md: str = "iris", **extra: str) -> dict[str, str]:
    return {names.LABEL_INSTANCE: md, names.LABEL_MANAGED_BY: names.FIELD_MANAGER, **extra}


def test_objects_are_kept_by_owner_and_found_by_labels() -> None:
    store = cache.Store()
    changed = store.replace(
        "Deployment", None, [obj("iris-a", variant="a"), obj("iris-b", variant="b"), obj("x-a", "x")]
    )
    assert changed == {("ml", "iris"), ("ml", "x")}
    assert {o["metadata"]["name"] for o in store.list_objects("apps/v1", "Deployment", "ml", labels())} == {
        "iris-a",
        "iris-b",
    }
    assert [o["metadata"]["name"] for o in store.list_objects("apps/v1", "Deployment", "ml", labels(variant="b"))] == [
        "iris-b"
    ]
    assert store.list_objects("apps/v1", "Deployment", "other", labels()) == []
    assert store.list_objects("v1", "Service", "ml", labels()) == []


def test_a_newer_version_wins_and_an_unchanged_one_reports_nothing() -> None:
    store = cache.Store()
    assert store.put("Deployment", obj("iris-a", version="5")) == ("ml", "iris")
    assert store.put("Deployment", obj("iris-a", version="5")) is None  # the same: no pass needed
    assert store.put("Deployment", obj("iris-a", version="4")) is None  # a late watch event after an apply
    assert store.list_objects("apps/v1", "Deployment", "ml", labels())[0]["metadata"]["resourceVersion"] == "5"
    assert store.drop("Deployment", obj("iris-a")) == ("ml", "iris")
    assert store.drop("Deployment", obj("iris-a")) is None


def test_a_fresh_list_replaces_what_was_known_of_its_kind_only() -> None:
    store = cache.Store()
    store.put("Deployment", obj("iris-a"))
    store.put("Service", obj("iris-a"))
    assert store.replace("Deployment", "ml", []) == {("ml", "iris")}  # deleted while no watch ran
    assert store.list_objects("apps/v1", "Deployment", "ml", labels()) == []
    assert len(store.list_objects("v1", "Service", "ml", labels())) == 1


def test_only_what_a_pass_reads_is_kept() -> None:
    kept = cache.trim("Deployment", obj("iris-a"))
    assert kept["metadata"]["managedFields"] == [{"manager": names.FIELD_MANAGER}] and kept["spec"] == {"replicas": 1}
    pod = cache.trim("Pod", obj("iris-a-1"))
    assert "spec" not in pod and "managedFields" not in pod["metadata"] and pod["status"] == {"phase": "Running"}


def test_a_refused_list_is_reported_until_one_succeeds() -> None:
    store = cache.Store()
    assert not store.synced("Pod")
    store.fail("Pod", 403, "forbidden")
    assert store.error("Pod") == (403, "forbidden") and store.synced("Pod")
    store.replace("Pod", None, [])
    assert store.error("Pod") is None


def test_a_key_is_queued_once_and_never_worked_on_twice_at_once() -> None:
    queue = cache.WorkQueue()
    for key in ("a", "b", "a"):
        queue.add(key)
    assert queue.get(0) == "a"
    queue.add("a")  # changed again while a worker has it
    assert queue.get(0) == "b"
    assert queue.get(0) is None  # not handed out again while in progress
    queue.done("a")
    assert queue.get(0) == "a"  # queued again once done
    queue.done("a")
    queue.done("b")
    assert queue.get(0) is None


def test_a_waiting_worker_wakes_for_a_new_key() -> None:
    queue, got = cache.WorkQueue(), []
    worker = threading.Thread(target=lambda: got.append(queue.get(10)))
    worker.start()
    queue.add("a")
    worker.join(10)
    assert got == ["a"]


def test_a_delayed_key_waits_and_a_burst_of_adds_makes_one_pass() -> None:
    queue = cache.WorkQueue()
    for _ in range(5):
        queue.add("a", delay=0.2)
    assert queue.get(0) is None  # not due yet
    started = time.monotonic()
    assert queue.get(5) == "a"
    assert 0.1 < time.monotonic() - started < 1
    queue.done("a")
    assert queue.get(0.3) is None  # the five adds were one


def test_adding_again_keeps_the_earlier_time() -> None:
    queue = cache.WorkQueue()
    queue.add("a", delay=60)
    queue.add("a")
    assert queue.get(0) == "a"


def named(name: str, namespace: str = "ml") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}}


def test_names_vouch_for_a_free_name_only_once_listed() -> None:
    found = cache.Names()
    assert not found.free("Service", "ml", "iris")  # nothing listed yet: unknown, not free
    found.replace("Service", None, iter([named("theirs"), named("iris", "other")]))
    assert found.free("Service", "ml", "iris") and not found.free("Service", "ml", "theirs")
    assert not found.free("ConfigMap", "ml", "iris")  # another kind is not listed
    found.put("Service", named("iris"))
    assert not found.free("Service", "ml", "iris")
    found.drop("Service", named("iris"))
    assert found.free("Service", "ml", "iris")
    found.fail("Service", 403, "forbidden")
    assert found.synced("Service") and not found.free("Service", "ml", "iris")  # stale: read each child
    found.replace("Service", None, [])
    assert found.free("Service", "ml", "theirs")


def test_names_listed_in_one_namespace_keep_the_others() -> None:
    found = cache.Names()
    found.replace("Service", "a", [named("x", "a")])
    found.replace("Service", "b", [named("y", "b")])
    assert not found.free("Service", "a", "x") and not found.free("Service", "b", "y")
    assert not found.free("Service", "c", "z")  # never listed there
    found.replace("Service", "a", [])
    assert found.free("Service", "a", "x") and not found.free("Service", "b", "y")
