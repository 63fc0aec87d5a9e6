"""Conditions and status from child states, and failures from pod statuses."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from mlmodel_operator import spec, status
from test_render import parsed

NOW, LATER = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"
DIGEST_TEXT = "digest_mismatch: sha256 mismatch for https://m/v2.joblib: expected aaa, got bbb"


def _conditions(st: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in st["conditions"]}


def ready(name: str, n: int) -> status.Observed:
    return status.Observed(name, exists=True, desired=n, ready=n, updated=n, total=n, current=True)


def routed(weights: dict[str, int] | None = None, router: status.Observed | None = None) -> status.Routing:
    return status.Routing(weights or {"stable": 90, "canary": 10}, router or ready("router", 2), via_router=True)


def crashing(container: str, terminated: dict[str, Any]) -> dict[str, Any]:
    """A pod whose ``container`` restarts after ending as ``terminated`` says."""
    waiting = {"waiting": {"reason": "CrashLoopBackOff"}}
    last = {"terminated": terminated}
    return {"status": {"containerStatuses": [{"name": container, "ready": False, "state": waiting, "lastState": last}]}}


def test_all_ready() -> None:
    md = parsed()
    st = status.compute(md, [ready("stable", 2), ready("canary", 1)], [], NOW, routed())
    assert _conditions(st) == {
        "Ready": ("True", "AllVariantsReady"),
        "Progressing": ("False", "RolloutComplete"),
        "Degraded": ("False", "NoFailures"),
    }
    assert st["observedGeneration"] == 3
    assert st["replicas"] == "3/3" and st["weights"] == "stable=90,canary=10"
    assert st["url"] == "http://iris.ml.svc.cluster.local"
    assert st["variants"][0] == {
        "name": "stable",
        "weight": 90,
        "desiredReplicas": 2,
        "readyReplicas": 2,
        "modelUri": "https://models.example.com/iris/v1.joblib",
        "modelSha256": parsed().variants[0].model_sha256,
    }


def test_rolling_out_is_progressing_not_ready() -> None:
    md = parsed()
    rolling = status.Observed("canary", exists=True, desired=1, ready=0, updated=1, current=True)
    st = status.compute(md, [ready("stable", 2), rolling], [], NOW, routed())
    assert _conditions(st)["Ready"] == ("False", "Waiting")
    assert _conditions(st)["Progressing"] == ("True", "RollingOut")
    assert "variant canary: 0/1 replicas ready" in st["conditions"][0]["message"]


def test_a_model_that_fails_to_load_is_degraded_with_the_servers_words() -> None:
    md = parsed()
    pod = crashing("server", {"exitCode": 2, "message": DIGEST_TEXT + "\n"})
    failing = status.observe("canary", {"spec": {"replicas": 1}, "status": {}, "metadata": {"generation": 1}}, [pod])
    assert failing.failure == status.Failure(status.MODEL_LOAD_FAILED, DIGEST_TEXT)
    st = status.compute(md, [ready("stable", 2), failing], [], NOW, routed())
    assert _conditions(st)["Ready"] == ("False", "ModelLoadFailed")
    assert _conditions(st)["Degraded"] == ("True", "ModelLoadFailed")
    assert st["conditions"][0]["message"] == f"variant canary: {DIGEST_TEXT}"


def test_image_pull_failures_and_healthy_restarts() -> None:
    pulling = {
        "status": {
            "containerStatuses": [
                {
                    "name": "server",
                    "ready": False,
                    "state": {"waiting": {"reason": "ImagePullBackOff", "message": "no such image"}},
                }
            ]
        }
    }
    assert status.pod_failure([pulling]) == status.Failure("ImagePullFailed", "no such image")
    recovered = {
        "status": {
            "containerStatuses": [
                {
                    "name": "server",
                    "ready": True,
                    "state": {"running": {}},
                    "lastState": {"terminated": {"exitCode": 137}},
                }
            ]
        }
    }
    assert status.pod_failure([recovered]) is None


def test_transition_times_are_kept_while_a_condition_holds() -> None:
    md = parsed()
    first = status.compute(md, [ready("stable", 2), ready("canary", 1)], [], NOW, routed())
    again = status.compute(md, [ready("stable", 2), ready("canary", 1)], first["conditions"], LATER, routed())
    assert again == first
    broken = status.compute(md, [ready("stable", 2), status.Observed("canary")], first["conditions"], LATER, routed())
    times = {c["type"]: c["lastTransitionTime"] for c in broken["conditions"]}
    assert times == {"Ready": LATER, "Progressing": LATER, "Degraded": NOW}


def test_invalid_spec() -> None:
    st = status.invalid(7, "spec.variants[0].modelUri: bad", [], NOW)
    assert _conditions(st) == {
        "Ready": ("False", "InvalidSpec"),
        "Progressing": ("False", "InvalidSpec"),
        "Degraded": ("True", "InvalidSpec"),
    }
    assert st["observedGeneration"] == 7
    assert status.condition(st, "Ready") == st["conditions"][0]


def test_a_variant_scaled_to_zero_is_ready() -> None:
    md = spec.parse(
        {
            "metadata": {"name": "m", "generation": 1},
            "spec": {
                "variants": [
                    {"name": "a", "modelUri": "file:///a", "weight": 100},
                    {"name": "b", "modelUri": "file:///b", "weight": 0, "replicas": 0},
                ]
            },
        },
        default_image="img",
    )
    st = status.compute(md, [ready("a", 1), ready("b", 0)], [], NOW, routed({"a": 100, "b": 0}))
    assert _conditions(st)["Ready"] == ("True", "AllVariantsReady")


def test_a_variant_that_is_not_ready_gets_none_of_its_weight_and_the_status_says_why() -> None:
    md = parsed()
    waiting = status.Observed("canary", exists=True, desired=1, ready=0, updated=1, total=1, current=True)
    st = status.compute(md, [ready("stable", 2), waiting], [], NOW, routed({"stable": 100, "canary": 0}))
    assert st["weights"] == "stable=100,canary=0"
    assert [v["weight"] for v in st["variants"]] == [100, 0]
    ready_condition = status.condition(st, "Ready")
    assert ready_condition is not None
    assert "canary gets none of its weight 10 (not ready)" in ready_condition["message"]
    assert (
        st["routing"] == "the router splits traffic: stable=100,canary=0; canary gets none of its weight 10 (not ready)"
    )


def test_a_router_rolling_out_new_weights_is_progressing() -> None:
    md = parsed()
    just_applied = status.Observed("router", exists=True, desired=2, ready=2, updated=0, total=2, current=False)
    surging = status.Observed("router", exists=True, desired=2, ready=3, updated=2, total=4, current=True)
    before = status.compute(md, [ready("stable", 2), ready("canary", 1)], [], NOW, routed())["conditions"]
    for rolling in (just_applied, surging):
        st = status.compute(md, [ready("stable", 2), ready("canary", 1)], before, NOW, routed(router=rolling))
        assert _conditions(st)["Progressing"] == ("True", "RoutingUpdate")
        assert _conditions(st)["Ready"] == ("True", "AllVariantsReady")  # the old pods serve meanwhile
        assert "stable=90,canary=10" in st["conditions"][1]["message"]
        # Not yet Ready, the first configuration with every variant must be out before it is.
        first = status.compute(md, [ready("stable", 2), ready("canary", 1)], [], NOW, routed(router=rolling))
        assert _conditions(first)["Ready"] == ("False", "Waiting")


def test_ready_waits_for_every_router_pod_to_route_to_the_ready_variants_the_first_time_only() -> None:
    """Router pods that have not yet reported the routes with every ready variant (a kube-proxy slow to admit a new
    Service: they route by the routes before it) keep a new ModelDeployment from Ready; a weight change later,
    which they take within a second, does not take Ready away, nor make it progress."""
    md = parsed()
    variants = [ready("stable", 2), ready("canary", 1)]
    behind = dataclasses.replace(routed(), behind=("iris-router-a",))
    first = status.compute(md, variants, [], NOW, behind)
    assert _conditions(first)["Ready"] == ("False", "Waiting")
    message = "the router's pods do not route to every ready variant yet (iris-router-a not yet)"
    assert first["conditions"][0]["message"] == message
    st = status.compute(md, variants, first["conditions"], NOW, routed())
    assert _conditions(st)["Ready"] == ("True", "AllVariantsReady")
    later = status.compute(md, variants, st["conditions"], NOW, behind)
    assert _conditions(later)["Ready"] == ("True", "AllVariantsReady")
    assert _conditions(later)["Progressing"] == ("False", "RolloutComplete")


def test_a_router_pod_that_is_still_terminating_keeps_the_rollout_going() -> None:
    deployment = {
        "spec": {"replicas": 2},
        "status": {"replicas": 2, "readyReplicas": 2, "updatedReplicas": 2, "observedGeneration": 3},
        "metadata": {"generation": 3},
    }
    running = {"status": {"phase": "Running"}}
    done = {"status": {"phase": "Succeeded"}}
    terminating = {"metadata": {"deletionTimestamp": NOW}, "status": {"phase": "Running"}}
    assert status.observe("router", deployment, [running, running, done]).rolled_out
    assert not status.observe("router", deployment, [running, running, terminating]).rolled_out


def test_a_router_that_crashes_is_degraded() -> None:
    md = parsed()
    pod = crashing("router", {"exitCode": 1, "message": "nginx: [emerg] bad config"})
    router = status.observe("router", None, [pod], container="router")
    st = status.compute(md, [ready("stable", 2), ready("canary", 1)], [], NOW, routed(router=router))
    assert _conditions(st)["Degraded"] == ("True", "RouterFailed")
    assert "the router: nginx: [emerg] bad config" in st["conditions"][2]["message"]


def test_pods_that_cannot_be_scheduled_are_unschedulable() -> None:
    message = "0/1 nodes are available: 1 Insufficient memory."
    pod = {
        "status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}],
        }
    }
    failure = status.pod_failure([pod])
    assert failure == status.Failure(status.UNSCHEDULABLE, message)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ('pods "iris-stable-1" is forbidden: exceeded quota: q, requested: pods=1', status.QUOTA_EXCEEDED),
        ('admission webhook "x" denied the request', status.REPLICA_FAILURE),
    ],
)
def test_pods_that_cannot_be_created_are_reported(message: str, reason: str) -> None:
    deployment = {
        "spec": {"replicas": 2},
        "status": {
            "conditions": [{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": message}]
        },
    }
    observed = status.observe("stable", deployment, [])
    assert observed.failure == status.Failure(reason, message)
    md = parsed(variants=[{"name": "stable", "modelUri": "file:///m.joblib"}])
    st = status.compute(md, [observed], [], NOW, status.Routing({"stable": 0}))
    assert _conditions(st)["Ready"] == ("False", reason)


def test_a_server_killed_for_its_memory_is_oomkilled_with_the_limit_and_does_not_progress() -> None:
    pod = crashing("server", {"exitCode": 137, "reason": "OOMKilled"})
    template = {"containers": [{"name": "server", "resources": {"limits": {"memory": "48Mi"}}}]}
    deployment = {"spec": {"replicas": 1, "template": {"spec": template}}, "status": {}, "metadata": {"generation": 1}}
    failing = status.observe("canary", deployment, [pod])
    assert failing.failure == status.Failure(
        status.OOM_KILLED,
        "server was killed for going over its memory limit of 48Mi (OOMKilled): raise resources.limits.memory",
    )
    st = status.compute(parsed(), [ready("stable", 2), failing], [], NOW, routed())
    assert _conditions(st) == {
        "Ready": ("False", "OOMKilled"),
        "Progressing": ("False", "OOMKilled"),
        "Degraded": ("True", "OOMKilled"),
    }
    assert st["conditions"][1]["message"] == st["conditions"][0]["message"]


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("https://user:pa55@host.example/m.joblib?X-Amz-Signature=abc&token=t0k#f", "https://host.example/m.joblib"),
        ("s3://AKIA:secret@bucket/m.joblib", "s3://bucket/m.joblib"),
        ("https://models.example.com/iris/v1.joblib", "https://models.example.com/iris/v1.joblib"),
    ],
)
def test_redact_uri(uri: str, shown: str) -> None:
    assert status.redact_uri(uri) == shown


def test_model_uris_in_status_and_failures_carry_no_credentials() -> None:
    md = parsed()
    secret_uri = "https://user:pa55@models.example.com/iris/v1.joblib?X-Amz-Signature=s3cr3t"
    md = dataclasses.replace(md, variants=(dataclasses.replace(md.variants[0], model_uri=secret_uri), *md.variants[1:]))
    st = status.compute(md, [ready("stable", 2), ready("canary", 1)], [], NOW, routed())
    assert st["variants"][0]["modelUri"] == "https://models.example.com/iris/v1.joblib"
    pod = crashing("server", {"exitCode": 1, "message": f"model_not_found: {secret_uri} does not exist (404)"})
    failure = status.pod_failure([pod])
    assert failure is not None and "s3cr3t" not in failure.message and "pa55" not in failure.message
    assert "https://models.example.com/iris/v1.joblib does not exist" in failure.message
