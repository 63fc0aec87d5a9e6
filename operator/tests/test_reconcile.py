"""One pass against an in-memory API whose writes can be made to fail: refusals, name conflicts, the
replicas handover. The fake stands in for ``kube`` only to inject those faults."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest
from mlmodel_operator import kube, names, netpol, reconcile, spec, status
from test_render import SMALL_ROUTERS, SMALL_SERVERS, defaults, parsed, resource

NOW = "2026-01-01T00:00:00Z"
UID = "uid-1"
Key = tuple[str, str]


class FakeApi:
    """Objects by (kind, name); ``refuse`` maps a key to the (code, message) the API answers a write with."""

    def __init__(self, *objects: dict[str, Any]) -> None:
        self.objects: dict[Key, dict[str, Any]] = {(o["kind"], o["metadata"]["name"]): o for o in objects}
        self.refuse: dict[Key, tuple[int, str]] = {}
        self.refuse_only: str | None = None  # refuse the writes of this field manager only
        self.refuse_list: dict[str, tuple[int, str]] = {}  # by kind
        self.refuse_events: tuple[int, str] | None = None
        self.events: list[str] = []
        self.applied: list[tuple[str, Key, dict[str, Any]]] = []
        self.deleted: list[Key] = []
        self.gets: list[Key] = []
        self.names = FakeNames(self)

    # As the watches' cache (``cache.Store``): the fake's objects are always up to date.
    def error(self, kind: str) -> tuple[int, str] | None:
        return self.refuse_list.get(kind)

    def put(self, kind: str, obj: dict[str, Any]) -> None:
        pass

    def drop(self, kind: str, obj: dict[str, Any]) -> None:
        pass

    def list_objects(self, api_version: str, kind: str, namespace: str, labels: Mapping[str, str]) -> list[Any]:
        return [
            o
            for (k, _), o in self.objects.items()
            if k == kind and labels.items() <= (o["metadata"].get("labels") or {}).items()
        ]

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.gets.append((kind, name))
        return self.objects.get((kind, name))

    def apply(self, obj: dict[str, Any], manager: str = names.FIELD_MANAGER) -> dict[str, Any]:
        key = (obj["kind"], obj["metadata"]["name"])
        if key in self.refuse and self.refuse_only in (None, manager):
            raise kube.Refused(*self.refuse[key])
        self.applied.append((manager, key, obj))
        if manager != names.FIELD_MANAGER:
            return self.objects[key]
        live = copy.deepcopy(obj)
        if obj["kind"] == "Service":
            live["spec"]["clusterIP"] = "10.96.0.1"
        self.objects[key] = live
        return live

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        if (kind, name) in self.refuse:
            raise kube.Refused(*self.refuse[(kind, name)])
        self.deleted.append((kind, name))
        self.objects.pop((kind, name), None)

    def event(self, md: Any, kind: str, reason: str, *_: Any) -> None:
        if self.refuse_events:
            raise kube.Refused(*self.refuse_events)
        self.events.append(reason)


class FakeNames:
    """As ``cache.Names``: every name the fake has, once ``listed`` (else none is vouched for)."""

    def __init__(self, api: FakeApi) -> None:
        self.api, self.listed = api, True

    def free(self, kind: str, namespace: str, name: str) -> bool:
        return self.listed and (kind, name) not in self.api.objects

    def put(self, kind: str, obj: dict[str, Any]) -> None:
        pass


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    fake = FakeApi()
    for name in ("get", "apply", "delete", "event"):
        monkeypatch.setattr(kube, name, getattr(fake, name))
    return fake


def run(
    api: FakeApi,
    md: spec.ModelDeployment,
    previous: Mapping[str, Any] | None = None,
    reports: Mapping[str, tuple[int, bool]] | None = None,
    now: str = NOW,
) -> reconcile.Outcome:
    """One pass at ``now`` (``reports``: what the router pods told the weights endpoint)."""
    store: Any = api  # as the watches' cache
    return reconcile.reconcile(md, previous or {}, now, "mlmodel-router:0.1.0", store, reports=reports)


def ready_condition(outcome: reconcile.Outcome) -> Mapping[str, Any]:
    found = status.condition(outcome.status, status.READY)
    assert found is not None
    return found


def single(**variant: Any) -> spec.ModelDeployment:
    return parsed(variants=[{"name": "stable", "modelUri": "file:///m.joblib", **variant}])


UNPROCESSABLE = (
    'Deployment.apps "iris-stable" is invalid: spec.template.spec.containers[0].resources.limits[gpu]: '
    'Invalid value: "gpu": must be a standard resource type or fully qualified'
)


def test_a_refused_child_is_reported_and_the_pass_goes_on(api: FakeApi) -> None:
    api.refuse[("Deployment", "iris-stable")] = (422, UNPROCESSABLE)
    previous = {"conditions": [{"type": "Ready", "status": "True", "reason": "AllVariantsReady", "message": "ok"}]}
    outcome = run(api, parsed(), previous)
    assert outcome.retry  # soon, not at the next resync: a refusal may be transient
    ready = ready_condition(outcome)
    assert (ready["status"], ready["reason"]) == ("False", status.APPLY_FAILED)
    assert ready["message"].startswith(f"apply Deployment iris-stable: {UNPROCESSABLE}")
    degraded = status.condition(outcome.status, status.DEGRADED)
    assert degraded is not None and degraded["status"] == "True"
    # Every other child was still applied: the canary, the variant's Service, the router, the entry Service.
    written = {key for _, key, _ in api.applied}
    assert {("Deployment", "iris-canary"), ("Service", "iris-stable"), ("Service", "iris")} <= written
    assert ("Deployment", "iris-router") in written


def test_a_quota_refusal_is_quota_exceeded(api: FakeApi) -> None:
    message = 'services "iris-stable" is forbidden: exceeded quota: q, requested: services=1, used: services=1'
    api.refuse[("Service", "iris-stable")] = (403, message)
    ready = ready_condition(run(api, single()))
    assert (ready["status"], ready["reason"]) == ("False", status.QUOTA_EXCEEDED)
    assert f"apply Service iris-stable: {message}" in ready["message"]
    assert ("Deployment", "iris-stable") in {key for _, key, _ in api.applied}


def test_a_webhook_refusal_is_apply_failed(api: FakeApi) -> None:
    api.refuse[("Service", "iris")] = (403, 'admission webhook "deny.example.com" denied the request: no')
    ready = ready_condition(run(api, single()))
    assert ready["reason"] == status.APPLY_FAILED and "denied the request" in ready["message"]


def test_a_refused_delete_is_reported(api: FakeApi) -> None:
    run(api, single(replicas=2))  # with a PodDisruptionBudget
    api.refuse[("PodDisruptionBudget", "iris-stable")] = (403, "forbidden by policy")
    outcome = run(api, single(replicas=1))
    assert outcome.retry
    ready = ready_condition(outcome)
    assert ready["reason"] == status.DELETE_FAILED
    assert "delete PodDisruptionBudget iris-stable: forbidden by policy" in ready["message"]


def test_a_refused_pod_list_is_reported_and_the_pass_goes_on(api: FakeApi) -> None:
    api.refuse_list["Pod"] = (500, "etcdserver: request timed out")
    outcome = run(api, parsed())
    assert not outcome.retry  # the watch reports when the kind lists again
    ready = ready_condition(outcome)
    assert (ready["status"], ready["reason"]) == ("False", status.LIST_FAILED)
    assert "list Pod: etcdserver: request timed out" in ready["message"]
    assert {("Deployment", "iris-stable"), ("Service", "iris")} <= {key for _, key, _ in api.applied}


def test_nothing_is_deleted_while_a_kind_cannot_be_listed(api: FakeApi) -> None:
    run(api, single(replicas=2))  # with a PodDisruptionBudget, no longer wanted at 1 replica
    api.refuse_list["Deployment"] = (403, 'deployments.apps is forbidden: User "x" cannot list')
    ready = ready_condition(run(api, single(replicas=1)))
    assert ready["reason"] == status.LIST_FAILED
    assert "list Deployment: deployments.apps is forbidden" in ready["message"]
    assert not api.deleted  # what is stale is not known without every list
    del api.refuse_list["Deployment"]
    run(api, single(replicas=1))
    assert api.deleted == [("PodDisruptionBudget", "iris-stable")]


def test_a_refused_event_does_not_stop_the_pass(api: FakeApi) -> None:
    api.refuse_events = (403, "unable to create new content in namespace ml because it is being terminated")
    memory: dict[str, Any] = {}
    verdict = reconcile.sync(
        resource(),
        default_image="s:1",
        router_image="r:1",
        now=NOW,
        memory=memory,
        store=api,  # type: ignore[arg-type]
    )
    assert verdict.status is not None and memory["status"] == verdict.status
    assert ("Service", "iris") in {key for _, key, _ in api.applied}


def test_a_pass_applies_the_operators_default_resources(api: FakeApi) -> None:
    """``sync`` hands the operator's defaults (its --server-resources and --router-resources) to the parsing, for
    every variant and router whose spec sets no resources: here stable and the router; canary sets its own."""
    reconcile.sync(
        resource(),
        default_image="s:1",
        router_image="r:1",
        now=NOW,
        memory={},
        store=api,  # type: ignore[arg-type]
        defaults=defaults(),
    )
    applied = {key: obj for _, key, obj in api.applied}

    def resources(name: str) -> Any:
        return applied[("Deployment", name)]["spec"]["template"]["spec"]["containers"][0]["resources"]

    assert resources("iris-stable")["requests"] == {**SMALL_SERVERS["requests"], "ephemeral-storage": "1Gi"}
    assert resources("iris-canary") == {"requests": {"cpu": "500m"}, "limits": {"cpu": "2", "memory": "1Gi"}}
    assert resources("iris-router") == SMALL_ROUTERS


def service(name: str, owner_uid: str | None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ml", "labels": labels or {"app": "mine"}}
    if owner_uid:
        meta["ownerReferences"] = [{"kind": names.KIND, "name": "other", "uid": owner_uid, "controller": True}]
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": {"selector": {"app": "mine"}}}


@pytest.mark.parametrize(
    ("existing", "name"),
    [
        (service("iris", None), "iris"),  # a user's own Service
        (service("iris-stable", "uid-other", names.owned_labels("iris-stable")), "iris-stable"),  # another MD's
        (service("iris-stable", "uid-other", names.owned_labels("iris")), "iris-stable"),  # our labels, not ours
    ],
)
def test_an_object_we_do_not_control_is_never_touched(api: FakeApi, existing: dict[str, Any], name: str) -> None:
    api.objects[("Service", name)] = existing
    before = copy.deepcopy(existing)
    outcome = run(api, single())
    ready = ready_condition(outcome)
    assert (ready["status"], ready["reason"]) == ("False", status.NAME_CONFLICT)
    assert f"Service {name} already exists and is not controlled by this ModelDeployment" in ready["message"]
    assert ("Service", name) not in {key for _, key, _ in api.applied}
    assert api.objects[("Service", name)] == before and not api.deleted
    assert ("Deployment", "iris-stable") in {key for _, key, _ in api.applied}


AUTOSCALING = {"autoscaling": {"minReplicas": 1, "maxReplicas": 5}, "resources": {"requests": {"cpu": "100m"}}}


@pytest.mark.parametrize("listed", [True, False])
def test_a_name_no_object_has_is_applied_without_a_read(api: FakeApi, listed: bool) -> None:
    """With the names of every object known, new children cost one apply each and no read; while
    they are not known (the names' list refused), each is read first."""
    api.names.listed = listed
    run(api, single())
    made = [key for _, key, _ in api.applied]
    assert made and api.gets == ([] if listed else made)


def test_replicas_are_handed_over_before_the_operator_stops_applying_them(api: FakeApi) -> None:
    run(api, single(replicas=3))
    live = api.objects[("Deployment", "iris-stable")]
    owned: dict[str, Any] = {"f:spec": {"f:replicas": {}, "f:template": {}}}
    live["metadata"]["managedFields"] = [{"manager": names.FIELD_MANAGER, "operation": "Apply", "fieldsV1": owned}]
    api.applied.clear()

    run(api, single(replicas=3, **AUTOSCALING))
    deployments = [(manager, obj) for manager, key, obj in api.applied if key == ("Deployment", "iris-stable")]
    assert [manager for manager, _ in deployments] == [names.HANDOVER_MANAGER, names.FIELD_MANAGER]
    assert deployments[0][1]["spec"] == {"replicas": 3}
    assert "replicas" not in deployments[1][1]["spec"]

    # Once the operator no longer owns replicas, nothing is handed over again.
    api.objects[("Deployment", "iris-stable")]["metadata"]["managedFields"] = [
        {"manager": names.HANDOVER_MANAGER, "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
    ]
    api.applied.clear()
    run(api, single(replicas=3, **AUTOSCALING))
    assert not [m for m, key, _ in api.applied if m == names.HANDOVER_MANAGER]


def test_a_refused_handover_keeps_applying_replicas(api: FakeApi) -> None:
    """Without the handover the operator must not drop replicas: the Deployment is left as it is."""
    run(api, single(replicas=3))
    live = api.objects[("Deployment", "iris-stable")]
    live["metadata"]["managedFields"] = [
        {"manager": names.FIELD_MANAGER, "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
    ]
    api.refuse[("Deployment", "iris-stable")] = (500, "etcdserver: request timed out")
    api.refuse_only = names.HANDOVER_MANAGER
    api.applied.clear()
    ready = ready_condition(run(api, single(replicas=3, **AUTOSCALING)))
    assert ready["reason"] == status.APPLY_FAILED
    assert ("Deployment", "iris-stable") not in {key for _, key, _ in api.applied}
    assert api.objects[("Deployment", "iris-stable")]["spec"]["replicas"] == 3


ACCESS = netpol.Access(({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},))


def policy_sources(api: FakeApi, access: netpol.Access | None, md: spec.ModelDeployment) -> list[Any] | None:
    """One pass with NetworkPolicies: who may reach the servers afterwards (``None``: no policy)."""
    reconcile.reconcile(md, {}, NOW, "mlmodel-router:0.1.0", api, access)  # type: ignore[arg-type]
    servers = api.objects.get(("NetworkPolicy", names.server_policy("iris")))
    return None if servers is None else [rule.get("from") for rule in servers["spec"]["ingress"]]


def test_servers_admit_only_the_router_once_the_entry_service_leads_there_and_policies_go_when_off(
    api: FakeApi,
) -> None:
    assert policy_sources(api, ACCESS, single()) == [None]  # no router: the entry Service leads to the server
    # A second variant: the router is made, but the entry Service keeps leading to the server this pass.
    assert policy_sources(api, ACCESS, parsed()) == [None]
    router = [{"podSelector": {"matchLabels": names.router_selector("iris")}}]
    assert policy_sources(api, ACCESS, parsed()) == [router, list(ACCESS.metrics_from)]
    assert ("NetworkPolicy", names.router("iris")) in api.objects
    # Back to one variant: the servers are open again in the pass that moves the entry Service to them.
    assert policy_sources(api, ACCESS, single()) == [None]
    assert ("NetworkPolicy", names.router("iris")) not in api.objects
    assert policy_sources(api, None, single()) is None
    assert ("NetworkPolicy", "iris") in api.deleted


def test_a_weight_change_rewrites_the_weights_configmap_with_the_next_serial_and_leaves_the_router_alone(
    api: FakeApi,
) -> None:
    """The routers follow their weights live: a weight change is a new weights document (next serial), the
    router's configuration and Deployment stay; a pass with the same weights applies nothing."""
    run(api, parsed())
    for name in ("iris-stable", "iris-canary"):  # both variants ready
        api.objects[("Deployment", name)]["status"] = {"readyReplicas": 1, "replicas": 1, "updatedReplicas": 1}
    first = run(api, parsed())
    # Serial 1 held no weight and no address: nothing was ready.
    assert first.weights == "serial 2\nstable 90 10.96.0.1:80\ncanary 10 10.96.0.1:80\n"
    router = copy.deepcopy(api.objects[("Deployment", names.router("iris"))])
    api.applied.clear()
    assert run(api, parsed()).weights == first.weights and not api.applied
    moved = [{**v, "weight": 50} for v in resource()["spec"]["variants"]]
    outcome = run(api, parsed(variants=moved))
    assert outcome.weights == "serial 3\nstable 50 10.96.0.1:80\ncanary 50 10.96.0.1:80\n"
    assert [key for _, key, _ in api.applied] == [("ConfigMap", names.router_weights("iris"))]
    assert api.objects[("ConfigMap", names.router_weights("iris"))]["data"] == {"weights": outcome.weights}
    assert api.objects[("Deployment", names.router("iris"))] == router


def test_a_variant_removed_goes_once_every_router_pod_routes_without_it_and_reaches_what_is_left(
    api: FakeApi,
) -> None:
    """The router's configuration stays when a variant goes (the routes are live): its Deployment and Service are
    deleted only once every running router pod has reported the new document's serial, reaching every address in
    it; until then the pass says the routers have not caught up (the rollout's steps wait on that too)."""
    three = [*resource()["spec"]["variants"], {"name": "v3", "modelUri": "file:///m3.joblib", "weight": 0}]
    run(api, parsed(variants=three))
    for name in ("iris-stable", "iris-canary", "iris-v3"):
        _ready(api, name)
    router = api.objects[("Deployment", names.router("iris"))]
    router["status"] = {key: router["spec"]["replicas"] for key in ("readyReplicas", "replicas", "updatedReplicas")}
    pod = {"kind": "Pod", "metadata": {"name": "iris-router-a", "labels": names.router_labels("iris")}}
    api.objects[("Pod", "iris-router-a")] = {**pod, "status": {"phase": "Running", "podIP": "10.244.0.9"}}
    config = api.objects[("Deployment", names.router("iris"))]["spec"]["template"]["metadata"]["annotations"]
    before = run(api, parsed(variants=three), reports={"iris-router-a": (2, True)})
    assert before.routed and before.weights is not None and before.weights.startswith("serial 2\n")
    two = [{**v, "weight": 50} for v in three[1:]]  # stable removed
    reports: dict[str, tuple[int, bool]] = {"iris-router-a": (2, True)}
    for reported in [(2, True), (3, False)]:  # behind, then on serial 3 but short of an address
        reports["iris-router-a"] = reported
        waiting = run(api, parsed(variants=two), reports=reports, now="2026-01-01T00:00:30Z")
        assert not waiting.routed and ("Deployment", "iris-stable") in api.objects, reported
        assert waiting.behind == ("iris-router-a",)
    assert waiting.weights is not None and waiting.weights.startswith("serial 3\n")
    reports["iris-router-a"] = (3, True)
    later = "2026-01-01T00:01:00Z"  # past LEFT_SERVING_SECONDS since the entry Service moved to the router
    done = run(api, parsed(variants=two), reports=reports, now=later)
    assert (
        done.routed and ("Deployment", "iris-stable") not in api.objects and ("Service", "iris-stable") in api.deleted
    )
    assert done.behind == ()
    assert api.objects[("Deployment", names.router("iris"))]["spec"]["template"]["metadata"]["annotations"] == config


def _ready(api: FakeApi, name: str) -> None:
    api.objects[("Deployment", name)]["status"] = {"readyReplicas": 1, "replicas": 1, "updatedReplicas": 1}


def _at(api: FakeApi, md: spec.ModelDeployment, now: str) -> reconcile.Outcome:
    return reconcile.reconcile(md, {}, now, "mlmodel-router:0.1.0", api)  # type: ignore[arg-type]


def test_what_the_entry_service_left_keeps_serving_until_kube_proxy_has_had_time_to_follow(api: FakeApi) -> None:
    """The only variant renamed: the entry Service moves to the new one once it is ready, and the old one's
    Deployment, still serving, goes only ``LEFT_SERVING_SECONDS`` after the move (the pass says when to come back);
    the time of the move is kept on the Service, and a pass that moves nothing writes nothing."""
    _at(api, single(), "2026-01-01T00:00:00Z")
    _ready(api, "iris-stable")
    renamed = parsed(variants=[{"name": "v2", "modelUri": "file:///m.joblib"}])
    waiting = _at(api, renamed, "2026-01-01T00:01:00Z")  # v2 not ready: the entry Service stays
    entry = api.objects[("Service", "iris")]
    assert entry["spec"]["selector"][names.LABEL_VARIANT] == "stable" and waiting.wake is None
    _ready(api, "iris-v2")
    moved = _at(api, renamed, "2026-01-01T00:02:00Z")
    entry = api.objects[("Service", "iris")]
    assert entry["spec"]["selector"][names.LABEL_VARIANT] == "v2"
    assert entry["metadata"]["annotations"][names.ANNOTATION_LEADS_SINCE] == "2026-01-01T00:02:00Z"
    assert ("Deployment", "iris-stable") in api.objects and moved.wake == reconcile.LEFT_SERVING_SECONDS
    api.applied.clear()
    later = _at(api, renamed, "2026-01-01T00:02:10Z")
    assert not api.applied and ("Deployment", "iris-stable") in api.objects
    assert later.wake == reconcile.LEFT_SERVING_SECONDS - 10
    gone = _at(api, renamed, "2026-01-01T00:02:15Z")
    assert ("Deployment", "iris-stable") not in api.objects and gone.wake is None
    assert api.objects[("Service", "iris")]["metadata"]["annotations"][names.ANNOTATION_LEADS_SINCE] == (
        "2026-01-01T00:02:00Z"
    )


def test_a_variant_that_never_served_goes_at_once_and_an_old_entry_service_counts_from_its_creation(
    api: FakeApi,
) -> None:
    _at(api, single(), "2026-01-01T00:00:00Z")
    entry = api.objects[("Service", "iris")]
    entry["metadata"].pop("annotations")  # made by an operator before the time was kept
    entry["metadata"]["creationTimestamp"] = "2025-12-31T00:00:00Z"
    api.applied.clear()
    _at(api, single(), "2026-01-01T00:00:05Z")
    since = api.objects[("Service", "iris")]["metadata"]["annotations"][names.ANNOTATION_LEADS_SINCE]
    assert since == "2025-12-31T00:00:00Z"
    renamed = parsed(variants=[{"name": "v2", "modelUri": "file:///m.joblib"}])
    _at(api, renamed, "2026-01-01T00:00:06Z")  # iris-stable never had a ready pod: nothing to move off
    assert ("Deployment", "iris-stable") not in api.objects
