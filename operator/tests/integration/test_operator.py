"""The operator in the tests' process (``conftest.InProcess``) against a real kube-apiserver (and its controllers)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from mlmodel_operator import config, drift, kube, names, netpol, render, spec
from mlmodel_operator.router import objects, traffic
from prometheus_client import REGISTRY

from conftest import ROUTER_ABSENT, Kubectl, OperatorProcess, converges, eventually

SHA = "d466fded41c4a559228ec0a59d7fab20d29353302d76491af19d4ce400b63cb4"
KOPF_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"  # kopf's, for handlers that need one


def md(name: str, namespace: str, *variants: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"variants": list(variants)},
    }


def variant(name: str, weight: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "modelUri": "file:///models/iris.joblib", "modelSha256": SHA, "weight": weight, **extra}


def children(kubectl: Kubectl, namespace: str, kind: str) -> set[str]:
    items = kubectl.read(kind, namespace=namespace, selector=f"{names.LABEL_MANAGED_BY}={names.FIELD_MANAGER}")
    return {i["metadata"]["name"] for i in items["items"]}


def condition(kubectl: Kubectl, namespace: str, name: str, kind: str) -> dict[str, Any] | None:
    obj = kubectl.get("modeldeployment", name, namespace) or {}
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == kind), None)


def test_create_update_remove_variant_and_garbage_collection(
    kubectl: Kubectl, namespace: str, operator: Callable[..., Any]
) -> None:
    servers, routers = {"requests": {"cpu": "20m", "memory": "256Mi"}}, {"requests": {"cpu": "10m"}}
    operator("--server-resources", json.dumps(servers), "--router-resources", json.dumps(routers))
    own = {"requests": {"cpu": "30m"}}
    kubectl.apply(md("iris", namespace, variant("stable", 90, replicas=2), variant("canary", 10, resources=own)))
    routed = {"iris-stable", "iris-canary", "iris-router"}
    eventually(lambda: children(kubectl, namespace, "deployments") == routed, "deployments")
    eventually(lambda: children(kubectl, namespace, "services") == {"iris", "iris-stable", "iris-canary"}, "services")
    stable = kubectl.read("deployment", "iris-stable", namespace)
    assert stable["spec"]["replicas"] == 2
    # The operator's default resources where the spec sets none; the canary's own win.
    for name, resources in (("iris-stable", servers), ("iris-canary", own), ("iris-router", routers)):
        (container,) = kubectl.read("deployment", name, namespace)["spec"]["template"]["spec"]["containers"]
        assert container["resources"] == resources, name
    owner = stable["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == (names.KIND, "iris", True)
    env = {e["name"]: e.get("value") for e in stable["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODEL_SHA256"] == SHA and env["MODEL_VARIANT"] == "stable" and env["MODEL_NAME"] == "iris"
    entry = kubectl.read("service", "iris", namespace)
    assert entry["spec"]["selector"] == names.router_selector("iris")
    # The router's configuration (named by its digest) and its weights, which the routers follow live.
    (config,) = children(kubectl, namespace, "configmaps") - {names.router_weights("iris")}
    assert config.startswith("iris-router-")
    weights = kubectl.read("configmap", names.router_weights("iris"), namespace)
    assert weights["data"]["weights"] == "serial 1\nstable 0 -\ncanary 0 -\n"  # no pod is ready here: no address
    # The router's budget, and stable's (2 replicas); canary runs one pod, and a budget would block drains.
    assert children(kubectl, namespace, "poddisruptionbudgets") == {"iris-router", "iris-stable"}
    status = eventually(lambda: (kubectl.get("modeldeployment", "iris", namespace) or {}).get("status"), "status")
    # No pod serves here, so no variant gets traffic, and the status says why.
    assert status["weights"] == "stable=0,canary=0" and status["observedGeneration"] == 1
    assert "stable gets none of its weight 90 (not ready)" in status["routing"]
    assert {c["type"] for c in status["conditions"]} == {"Ready", "Progressing", "Degraded"}

    # Update: weights flip, replicas change.
    kubectl.apply(md("iris", namespace, variant("stable", 30, replicas=1), variant("canary", 70)))
    eventually(
        lambda: kubectl.read("deployment", "iris-stable", namespace)["spec"]["replicas"] == 1,
        "stable scaled to 1",
    )
    eventually(lambda: children(kubectl, namespace, "poddisruptionbudgets") == {"iris-router"}, "stable's PDB gone")
    eventually(
        lambda: "stable gets none of its weight 30" in kubectl.read("md", "iris", namespace)["status"]["routing"],
        "the status to follow the weights",
    )

    # Down to one variant: no router any more, and the removed variant's children are deleted
    # (at once here: nothing of theirs serves, so no traffic has to move off them first).
    kubectl.apply(md("iris", namespace, variant("canary", 100)))
    eventually(lambda: children(kubectl, namespace, "deployments") == {"iris-canary"}, "iris-stable deleted")
    eventually(lambda: children(kubectl, namespace, "services") == {"iris", "iris-canary"}, "its Service deleted")
    eventually(lambda: not children(kubectl, namespace, "configmaps"), "the router's config deleted")
    entry = kubectl.read("service", "iris", namespace)
    assert entry["spec"]["selector"] == names.selector("iris", "canary")
    # One Event per pass for what it applied, one for what it deleted, each naming every object: written once the
    # pass is done, so maybe a moment after the deletions it names.
    wanted = ("deleted Deployment iris-stable:", "deleted Deployment iris-router:", "applied Deployment iris-canary:")

    def passes() -> list[dict[str, Any]] | None:
        """The Events about iris, once they name every change wanted."""
        found = kubectl.read("events", namespace=namespace, fields="involvedObject.name=iris")
        items: list[dict[str, Any]] = found["items"]
        changes = [change for e in items for change in e["message"].split("; ")]
        return items if all(any(change.startswith(w) for change in changes) for w in wanted) else None

    events = eventually(passes, "the passes' Events naming the changes")
    assert {"Applied", "Deleted"} <= {e["reason"] for e in events}

    # Deleting the ModelDeployment garbage-collects every child through owner references.
    kubectl("delete", "modeldeployment", "iris", "-n", namespace)
    eventually(
        lambda: not children(kubectl, namespace, "deployments") and not children(kubectl, namespace, "services"),
        "children garbage-collected",
    )


def test_drift_is_repaired_through_the_watches(kubectl: Kubectl, namespace: str, operator: Callable[..., Any]) -> None:
    """With no resync for an hour, a hand edit and a deleted child are repaired within seconds: the
    watches on the children queue a pass of their owner, and no resync pass runs meanwhile."""
    operator("--resync-seconds", "3600")
    kubectl.apply(md("iris", namespace, variant("stable", 100, replicas=0)))
    eventually(lambda: children(kubectl, namespace, "services") == {"iris", "iris-stable"}, "children")
    resyncs = _count("mlmodel_operator_reconciles_total", trigger="resync")
    watched = _count("mlmodel_operator_reconciles_total", trigger="watch")
    started = time.monotonic()
    kubectl("set", "image", "deployment/iris-stable", "server=tampered:1", "-n", namespace)
    kubectl("delete", "service", "iris-stable", "-n", namespace)

    def repaired() -> bool:
        dep = kubectl.read("deployment", "iris-stable", namespace)
        image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
        return image == "mlmodel-server:0.1.0" and kubectl.get("service", "iris-stable", namespace) is not None

    eventually(repaired, "image and Service restored", deadline=10)
    assert time.monotonic() - started < 10
    assert _count("mlmodel_operator_reconciles_total", trigger="resync") == resyncs
    assert _count("mlmodel_operator_reconciles_total", trigger="watch") > watched


def _count(metric: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


def test_hpa_owns_replicas(kubectl: Kubectl, namespace: str, operator: Callable[[], Any]) -> None:
    operator()
    resources = {"requests": {"cpu": "100m"}}
    kubectl.apply(md("iris", namespace, variant("stable", 100, replicas=1, resources=resources)))
    eventually(lambda: kubectl.get("deployment", "iris-stable", namespace), "deployment")
    assert names.FIELD_MANAGER in _replicas_managers(kubectl, namespace)

    # Autoscaling switched on (and nothing else): the HPA appears and the operator lets go of replicas.
    scaling = {"minReplicas": 1, "maxReplicas": 5, "targetCPUUtilizationPercentage": 60}
    kubectl.apply(md("iris", namespace, variant("stable", 100, replicas=1, autoscaling=scaling, resources=resources)))
    hpa = eventually(lambda: kubectl.get("hpa", "iris-stable", namespace), "HPA")
    assert hpa["spec"]["maxReplicas"] == 5
    assert hpa["spec"]["scaleTargetRef"]["name"] == "iris-stable"
    eventually(lambda: names.FIELD_MANAGER not in _replicas_managers(kubectl, namespace), "replicas handed over")
    kubectl("scale", "deployment/iris-stable", "--replicas=3", "-n", namespace)
    # Several passes later the operator has not fought the scale-up.
    _passes(3)
    assert kubectl.read("deployment", "iris-stable", namespace)["spec"]["replicas"] == 3
    assert names.FIELD_MANAGER not in _replicas_managers(kubectl, namespace)

    # Turning autoscaling off removes the HPA and gives replicas back to the spec.
    kubectl.apply(md("iris", namespace, variant("stable", 100, replicas=2)))
    eventually(lambda: kubectl.get("hpa", "iris-stable", namespace) is None, "HPA deleted")
    eventually(
        lambda: kubectl.read("deployment", "iris-stable", namespace)["spec"]["replicas"] == 2,
        "replicas from the spec",
    )


def _replicas_managers(kubectl: Kubectl, namespace: str) -> set[str]:
    """The field managers that own the spec.replicas of Deployment iris-stable."""
    dep = kubectl.read("deployment", "iris-stable", namespace)
    return {
        m["manager"]
        for m in dep["metadata"]["managedFields"]
        if "f:replicas" in (m.get("fieldsV1") or {}).get("f:spec", {})
    }


def test_switching_autoscaling_on_keeps_the_replicas(
    kubectl: Kubectl, namespace: str, operator: Callable[[], Any]
) -> None:
    """Autoscaling on together with a pod-template change: server-side apply must not drop replicas to 1.

    There is no metrics-server here, so the HPA cannot act: any drop would be the operator's.
    """
    operator()
    resources = {"requests": {"cpu": "100m"}}
    kubectl.apply(md("iris", namespace, variant("stable", 100, replicas=3, resources=resources)))
    eventually(
        lambda: (kubectl.get("deployment", "iris-stable", namespace) or {}).get("spec", {}).get("replicas") == 3,
        "3 replicas",
    )
    scaling = {"minReplicas": 1, "maxReplicas": 5}
    env = [{"name": "LOG_LEVEL", "value": "debug"}]
    kubectl.apply(
        md("iris", namespace, variant("stable", 100, replicas=3, autoscaling=scaling, resources=resources, env=env))
    )
    seen: list[int] = []

    def template_changed() -> bool:
        dep = kubectl.read("deployment", "iris-stable", namespace)
        seen.append(dep["spec"]["replicas"])
        container = dep["spec"]["template"]["spec"]["containers"][0]
        return any(e["name"] == "LOG_LEVEL" for e in container.get("env") or [])

    eventually(template_changed, "the new pod template")
    eventually(lambda: kubectl.get("hpa", "iris-stable", namespace), "the HPA")
    end = time.monotonic() + 8  # several passes after the change
    while time.monotonic() < end:
        template_changed()
        time.sleep(0.25)
    assert min(seen) >= 3, seen
    assert names.FIELD_MANAGER not in _replicas_managers(kubectl, namespace)


def _passes(count: int) -> None:
    """Wait until ``count`` whole passes have run after this call (a pass under way now does not count).

    Counted by the passes that finished (the duration histogram is observed at the end of each pass;
    the operator runs in this process).
    """
    start = _finished()
    eventually(lambda: _finished() >= start + count + 1, f"{count} fresh passes", deadline=15 * count)


def _finished() -> int:
    return int(REGISTRY.get_sample_value("mlmodel_operator_reconcile_seconds_count") or 0)


# The most variants the CRD allows (spec.variants maxItems), each with an autoscaler and a budget.
MAX_VARIANTS = 10


def crowded(namespace: str, variants: list[str]) -> dict[str, Any]:
    """ModelDeployment ``iris`` with a Deployment, Service, HPA and PodDisruptionBudget per variant,
    and the router's ConfigMaps (configuration, weights), Deployment and budget: a pass applies them one by one."""
    weights = [100 // len(variants)] * len(variants)
    weights[0] += 100 - sum(weights)
    extra = {"autoscaling": {"minReplicas": 2, "maxReplicas": 3}, "resources": {"requests": {"cpu": "10m"}}}
    return md("iris", namespace, *(variant(v, w, **extra) for v, w in zip(variants, weights, strict=True)))


def no_pods(namespace: str) -> dict[str, Any]:
    """A quota that refuses every pod: the Deployments exist, but no pod runs (or becomes ready)."""
    meta = {"name": "no-pods", "namespace": namespace}
    return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": meta, "spec": {"hard": {"pods": "0"}}}


def desired(body: dict[str, Any], since: str = "") -> dict[tuple[str, str], dict[str, Any]]:
    """Every child the operator should make for ``body`` while no variant is ready, by kind and name (the entry
    Service leads to the router from the first pass on, so the servers' NetworkPolicy admits only the router, and
    has since ``since``)."""
    settings = config.parse([])
    parsed = spec.parse(body, default_image=settings.server_image, defaults=settings.defaults)
    routed = traffic.router_config(parsed, {})
    router = objects.children(parsed, routed, traffic.routing_document(routed.routes, 1), ROUTER_ABSENT)
    assert settings.access is not None
    policies = netpol.network_policies(parsed, settings.access, behind_router=True)
    wanted = [*render.variant_children(parsed), *router, *policies, render.entry_service(parsed, None, since)]
    return {(o["kind"], o["metadata"]["name"]): o for o in wanted}


def owned(namespace: str, uid: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Everything of the operator's kinds in ``namespace`` that carries its labels or names ``uid`` as owner."""
    labels = names.owned_labels("iris").items()
    return {
        (kind, o["metadata"]["name"]): o
        for api_version, kind in kube.CHILD_KINDS
        for page, _ in kube.pages(api_version, kind, namespace, None)
        for o in page
        if labels <= (o["metadata"].get("labels") or {}).items()
        or uid in {ref["uid"] for ref in o["metadata"].get("ownerReferences") or []}
    }


def test_restart_in_the_middle_of_reconciling(
    kubectl: Kubectl, namespace: str, operator_process: Callable[[], OperatorProcess]
) -> None:
    """The operator, a process of its own, is SIGKILLed while its first pass is applying the 47
    children of a ModelDeployment with the most variants the CRD allows. While no operator runs,
    the spec drops its first variant (whose Deployment is the pass's first child). A fresh
    operator converges: every child it should make exists once, as rendered, controlled by the
    ModelDeployment; nothing else of its kinds is left (the dropped variant's children, or a
    second router ConfigMap); the status is of the current generation."""
    kubectl.apply(no_pods(namespace))
    variants = [f"v{i}" for i in range(MAX_VARIANTS)]
    kubectl.apply(crowded(namespace, variants))  # made while no operator runs
    body = kubectl.read("md", "iris", namespace)
    uid, first_pass = body["metadata"]["uid"], desired(body)
    assert len(first_pass) == 4 * MAX_VARIANTS + 7 and not owned(namespace, uid)

    first = operator_process()
    eventually(
        lambda: next(kube.pages("apps/v1", "Deployment", namespace, names.owned_labels("iris")))[0],
        "the pass's first child",
        interval=0.01,
    )
    under_way = first.metrics()
    first.kill()
    started = under_way.get("mlmodel_operator_reconciles_total")
    finished = under_way.get("mlmodel_operator_reconcile_seconds_count")
    assert (started, finished) == (1, 0), f"no pass under way at the kill: {started} started, {finished} finished"
    left = owned(namespace, uid)
    assert 0 < len(left) < len(first_pass), (
        f"the kill did not land in the middle of the pass: {len(left)} of its {len(first_pass)} children exist"
    )
    assert ("Deployment", "iris-v0") in left  # the first child the pass applies
    print(f"\nkilled with {len(left)} of the pass's {len(first_pass)} children made")

    kubectl.apply(crowded(namespace, variants[1:]))
    assert kubectl.read("md", "iris", namespace)["metadata"]["generation"] == 2
    operator_process()

    def problems() -> list[str]:
        body = kubectl.read("md", "iris", namespace)
        found = owned(namespace, uid)
        entry = found.get(("Service", names.entry_service("iris")), {"metadata": {}})["metadata"]
        wanted = desired(body, (entry.get("annotations") or {}).get(names.ANNOTATION_LEADS_SINCE, ""))
        wrong = [f"missing {kind} {name}" for kind, name in sorted(wanted.keys() - found.keys())]
        wrong += [f"left over {kind} {name}" for kind, name in sorted(found.keys() - wanted.keys())]
        for key in sorted(wanted.keys() & found.keys()):
            refs = found[key]["metadata"].get("ownerReferences") or []
            if not any(ref.get("controller") and ref["uid"] == uid for ref in refs):
                wrong.append(f"{key[0]} {key[1]} is not controlled by iris")
            if where := drift.drifted(wanted[key], found[key]):
                wrong.append(f"{key[0]} {key[1]} differs at {where}")
        status, generation = body.get("status") or {}, body["metadata"]["generation"]
        if status.get("observedGeneration") != generation or not status.get("conditions"):
            wrong.append(f"status of generation {status.get('observedGeneration')}, not {generation}")
        return wrong

    converges(problems, "a fresh operator to converge on generation 2", deadline=90)


def test_invalid_spec_is_reported_once(kubectl: Kubectl, namespace: str, operator: Callable[[], Any]) -> None:
    operator()
    # The CRD accepts autoscaling without a CPU request; the operator cannot scale on CPU without one.
    kubectl.apply(md("bad", namespace, variant("v", 100, autoscaling={"maxReplicas": 3})))
    ready = eventually(lambda: condition(kubectl, namespace, "bad", "Ready"), "a Ready condition")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.variants[0].resources.requests.cpu" in ready["message"]
    _passes(3)
    events = kubectl.read("events", namespace=namespace, fields="involvedObject.name=bad")["items"]
    assert [e["reason"] for e in events] == ["InvalidSpec"]
    assert not children(kubectl, namespace, "deployments")


def test_objects_we_do_not_control_are_left_alone(
    kubectl: Kubectl, namespace: str, operator: Callable[[], Any]
) -> None:
    """A user's Service ``iris``, and ModelDeployment ``iris-stable``'s entry Service, which variant
    ``stable`` of ``iris`` would also want: neither is taken over."""
    kubectl("create", "service", "clusterip", "iris", "--tcp=80:8080", "-n", namespace)
    user_service = kubectl.read("service", "iris", namespace)
    operator()
    kubectl.apply(md("iris-stable", namespace, variant("v", 100, replicas=0)))
    other = eventually(lambda: kubectl.get("service", "iris-stable", namespace), "iris-stable's entry Service")
    kubectl.apply(md("iris", namespace, variant("stable", 100, replicas=0)))

    def conflict() -> dict[str, Any] | None:
        ready = condition(kubectl, namespace, "iris", "Ready")
        return ready if ready and ready["reason"] == "NameConflict" else None

    ready = eventually(conflict, "Ready=False, NameConflict")
    assert ready["status"] == "False"
    assert "Service iris already exists and is not controlled by this ModelDeployment" in ready["message"]
    assert "Service iris-stable already exists" in ready["message"]
    _passes(2)
    mine = kubectl.read("service", "iris", namespace)
    assert mine["spec"]["selector"] == user_service["spec"]["selector"]
    assert not mine["metadata"].get("ownerReferences")
    theirs = kubectl.read("service", "iris-stable", namespace)
    assert theirs["metadata"]["ownerReferences"] == other["metadata"]["ownerReferences"]
    assert theirs["spec"]["selector"] == other["spec"]["selector"]
    # The rest of the pass went on.
    assert kubectl.get("deployment", "iris-stable", namespace) is not None


def test_a_refusal_reaches_the_status_and_is_retried_soon(
    kubectl: Kubectl, namespace: str, operator: Callable[..., Any]
) -> None:
    """A quota refuses the HPA: Ready turns False with the API server's words, and the rest is applied.
    Once the quota goes, the pass is retried within seconds, not at the next resync (10 minutes here)."""
    operator("--resync-seconds", "600")
    resources = {"requests": {"cpu": "100m"}}
    kubectl.apply(md("iris", namespace, variant("stable", 100, replicas=0, resources=resources)))
    eventually(
        lambda: (condition(kubectl, namespace, "iris", "Ready") or {}).get("status") == "True", "Ready=True (0/0)"
    )
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "no-hpa", "namespace": namespace},
        "spec": {"hard": {"count/horizontalpodautoscalers.autoscaling": "0"}},
    }
    kubectl.apply(quota)
    eventually(
        lambda: (kubectl.read("resourcequota", "no-hpa", namespace).get("status") or {}).get("hard"),
        "the quota to be counted",
    )
    scaling = {"minReplicas": 1, "maxReplicas": 2}
    env = [{"name": "LOG_LEVEL", "value": "debug"}]
    kubectl.apply(
        md("iris", namespace, variant("stable", 100, replicas=0, resources=resources, autoscaling=scaling, env=env))
    )

    def refused() -> dict[str, Any] | None:
        ready = condition(kubectl, namespace, "iris", "Ready")
        return ready if ready and ready["reason"] == "QuotaExceeded" else None

    retries = _count("mlmodel_operator_reconciles_total", trigger="retry")
    ready = eventually(refused, "Ready=False, QuotaExceeded")
    # Retried on its own, with no change to watch and no resync due (10 minutes): twice, 1 then 2 s after
    # a refusal, each after a pass that takes seconds on a loaded CI machine.
    eventually(lambda: _count("mlmodel_operator_reconciles_total", trigger="retry") >= retries + 2, "two retries", 30)
    assert ready["status"] == "False"
    assert "apply HorizontalPodAutoscaler iris-stable:" in ready["message"]
    assert "exceeded quota: no-hpa" in ready["message"]
    degraded = condition(kubectl, namespace, "iris", "Degraded")
    assert degraded is not None and degraded["status"] == "True"
    # The Deployment's new template was applied all the same.
    dep = kubectl.read("deployment", "iris-stable", namespace)
    assert any(e["name"] == "LOG_LEVEL" for e in dep["spec"]["template"]["spec"]["containers"][0]["env"])
    kubectl("delete", "resourcequota", "no-hpa", "-n", namespace)
    # The retries back off (1, 2, 4 ... 60 s): the next one comes within a minute of the quota's removal.
    eventually(lambda: kubectl.get("horizontalpodautoscaler", "iris-stable", namespace), "the HPA, retried", 65)


def test_deleting_needs_no_operator(kubectl: Kubectl, namespace: str, operator: Callable[[], Any]) -> None:
    """No finalizer, so with the operator stopped (or uninstalled) ``kubectl delete md`` and deleting
    the namespace finish. kopf's finalizer on an object from before (a per-object timer put it
    there) is taken off."""
    kubectl.apply(md("old", namespace, variant("v", 100, replicas=0)))
    kubectl(
        "patch",
        "md",
        "old",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"metadata": {"finalizers": [KOPF_FINALIZER]}}),
    )
    running = operator()
    kubectl.apply(md("iris", namespace, variant("v", 100, replicas=0)))
    eventually(lambda: children(kubectl, namespace, "deployments") == {"iris-v", "old-v"}, "the children of both")

    def finalizers() -> dict[str, list[str]]:
        items = kubectl.read("md", namespace=namespace)["items"]
        return {i["metadata"]["name"]: i["metadata"].get("finalizers", []) for i in items}

    eventually(lambda: finalizers() == {"iris": [], "old": []}, "no finalizer on either")
    _passes(2)  # resync passes put none on either
    assert finalizers() == {"iris": [], "old": []}
    running.stop()
    kubectl("delete", "md", "iris", "-n", namespace, "--timeout=30s")
    assert kubectl.get("md", "iris", namespace) is None
    kubectl("delete", "namespace", namespace, "--timeout=60s")
    assert kubectl("get", "namespace", namespace, check=False).returncode != 0


def _applied() -> float:
    return _count("mlmodel_operator_changes_total", action="applied")


def test_a_field_removed_from_the_spec_leaves_the_child(
    kubectl: Kubectl, namespace: str, operator: Callable[[], Any]
) -> None:
    """The live Deployment still holds everything a smaller spec wants, yet the removed env entry
    and limit must go: the operator applies again, and server-side apply drops what it stopped applying."""
    operator()
    resources = {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}}
    env = [{"name": "LOG_LEVEL", "value": "debug"}]
    kubectl.apply(md("iris", namespace, variant("stable", 100, replicas=0, env=env, resources=resources)))

    def server() -> dict[str, Any]:
        dep = kubectl.get("deployment", "iris-stable", namespace) or {"spec": {"template": {"spec": {}}}}
        containers = dep["spec"]["template"]["spec"].get("containers") or [{}]
        return dict(containers[0])

    eventually(lambda: "LOG_LEVEL" in {e["name"] for e in server().get("env") or []}, "LOG_LEVEL set")
    assert server()["resources"]["limits"] == {"memory": "1Gi"}
    requests = {"requests": {"cpu": "100m"}}
    kubectl.apply(md("iris", namespace, variant("stable", 100, replicas=0, env=env, resources=requests)))
    eventually(lambda: "limits" not in server()["resources"], "the limit removed")
    kubectl.apply(md("iris", namespace, variant("stable", 100, replicas=0, resources=requests)))
    eventually(lambda: "LOG_LEVEL" not in {e["name"] for e in server()["env"]}, "LOG_LEVEL removed")
    assert server()["resources"] == requests


def test_an_injected_sidecar_causes_no_writes(kubectl: Kubectl, namespace: str, operator: Callable[[], Any]) -> None:
    """Another manager's container (an injected sidecar) and env entry (``kubectl set env``) extend the
    operator's lists; that is not drift: several passes later nothing was applied and both are still there."""
    operator()
    kubectl.apply(md("iris", namespace, variant("stable", 100, replicas=0)))
    eventually(lambda: condition(kubectl, namespace, "iris", "Ready"), "status")
    sidecar = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "iris-stable", "namespace": namespace},
        "spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "proxy:1"}]}}},
    }
    kubectl("apply", "--server-side", "--field-manager=injector", "-f", "-", stdin=json.dumps(sidecar))
    kubectl("set", "env", "deployment/iris-stable", "-c", "server", "DEBUG=1", "-n", namespace)

    def observed() -> dict[str, Any] | None:
        """The Deployment once its controller has written the status of the new template (a write of
        its own, which must not be taken for the operator's)."""
        found = kubectl.read("deployment", "iris-stable", namespace)
        status, generation = found.get("status") or {}, found["metadata"]["generation"]
        return found if status.get("observedGeneration") == generation else None

    before = eventually(observed, "the deployment controller to observe the new template")
    applied = _applied()
    _passes(3)
    after = kubectl.read("deployment", "iris-stable", namespace)
    assert _applied() == applied
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    containers = {c["name"]: c for c in after["spec"]["template"]["spec"]["containers"]}
    assert set(containers) == {"server", "sidecar"}
    assert {"name": "DEBUG", "value": "1"} in containers["server"]["env"]


def test_a_restarted_operator_applies_nothing_that_is_in_place(
    kubectl: Kubectl, namespace: str, operator: Callable[[], Any]
) -> None:
    """A fresh operator lists the children it made before: each is in place, so its passes apply
    nothing (a listed child read as drifted would be applied again, at every start, for every child)."""
    first = operator()
    kubectl.apply(md("iris", namespace, variant("a", 50, replicas=0), variant("b", 50, replicas=0)))
    eventually(lambda: condition(kubectl, namespace, "iris", "Ready"), "status")
    _passes(2)
    first.stop()
    applied = _applied()
    operator()
    _passes(3)
    assert _applied() == applied
