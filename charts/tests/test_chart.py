"""The chart as ``helm template`` renders it: lint, labels, RBAC against the golden allowlist,
security contexts, the schema, the CRD, the generated files and the Kubernetes schemas."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import chart as generated
import kubeschemas
import pytest
import yaml
from mlmodel_operator import config, names, spec

from conftest import CHART, CI_VALUES, GOLDEN, NAMESPACE, REPO, find, helm, render, tool

Rules = dict[str, list[str]]
NAMESPACE_SCOPE = ["--set", "rbac.scope=namespace", "--set", "watchNamespaces={team-a,team-b}"]
EVERYTHING = ["-f", str(CHART / "ci" / "monitoring-values.yaml")]


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda v: v.name if v else "defaults")
def test_lint_strict(values: Path | None) -> None:
    result = helm("lint", "--strict", str(CHART), *(["-f", str(values)] if values else []), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


def test_labels_are_the_operator_names_twin() -> None:
    objects = render(*EVERYTHING)
    operator_keys = set(names.labels("md", "v")) - {names.LABEL_VARIANT}
    for obj in objects:
        labels = obj["metadata"]["labels"]
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        assert operator_keys <= set(labels) | {names.LABEL_MANAGED_BY}, where
        assert labels[names.LABEL_PART_OF] == "mlmodel", where
        assert labels[names.LABEL_INSTANCE] == "mlmodel", where
        assert labels[names.LABEL_MANAGED_BY] == "Helm", where
        assert labels["helm.sh/chart"] == "mlmodel-0.1.0", where
    (deployment,) = find(objects, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector == {
        names.LABEL_NAME: "mlmodel-operator",
        names.LABEL_INSTANCE: "mlmodel",
        names.LABEL_COMPONENT: "operator",
    }
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    (service,) = find(objects, "Service")
    assert service["spec"]["selector"] == selector


def test_podmonitors_select_what_the_operator_labels() -> None:
    objects = render(*EVERYTHING)
    (servers,) = find(objects, "PodMonitor", "mlmodel-servers")
    wanted = {k: v for k, v in names.selector("md").items() if k != names.LABEL_INSTANCE}
    assert servers["spec"]["selector"]["matchLabels"] == wanted
    assert servers["spec"]["podMetricsEndpoints"][0]["port"] == names.HTTP_PORT_NAME
    (routers,) = find(objects, "PodMonitor", "mlmodel-routers")
    wanted = {k: v for k, v in names.router_selector("md").items() if k != names.LABEL_INSTANCE}
    assert routers["spec"]["selector"]["matchLabels"] == wanted
    assert routers["spec"]["podMetricsEndpoints"][0]["port"] == names.ADMIN_PORT_NAME
    (operator,) = find(objects, "ServiceMonitor")
    assert operator["spec"]["endpoints"][0]["honorLabels"] is True  # the series' own namespace label wins


def test_names_are_cut_to_63_characters() -> None:
    scope = ["--set", "rbac.scope=namespace", "--set", "watchNamespaces={a}", *EVERYTHING]
    long_names = ["--set", f"nameOverride={'n' * 70}", "--set", f"fullnameOverride={'f' * 70}"]
    for objects in (render(*scope, release="r" * 53), render(*scope, *long_names)):
        for obj in objects:
            assert len(obj["metadata"]["name"]) <= 63, obj["metadata"]["name"]
            assert all(len(v) <= 63 for v in obj["metadata"]["labels"].values()), obj["metadata"]["labels"]


def _key(group: str, resource: str) -> str:
    """``kubectl auth can-i --list``'s name of a resource: resource[.group][/subresource]."""
    base, _, sub = resource.partition("/")
    return base + (f".{group}" if group else "") + (f"/{sub}" if sub else "")


def _merge(rules: list[dict[str, Any]]) -> Rules:
    out: dict[str, set[str]] = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault(_key(group, resource), set()).update(rule["verbs"])
    return {k: sorted(v) for k, v in out.items()}


def operator_permissions(objects: list[dict[str, Any]]) -> tuple[Rules, dict[str, Rules]]:
    """What the operator's ServiceAccount may do: cluster-wide, and per namespace."""
    subject = {"kind": "ServiceAccount", "name": "mlmodel-operator", "namespace": NAMESPACE}
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objects}
    cluster: list[dict[str, Any]] = []
    namespaced: dict[str, list[dict[str, Any]]] = {}
    for binding in find(objects, "ClusterRoleBinding") + find(objects, "RoleBinding"):
        if subject not in binding["subjects"]:
            continue
        namespace = binding["metadata"].get("namespace")
        ref = binding["roleRef"]
        role = roles[(ref["kind"], namespace if ref["kind"] == "Role" else None, ref["name"])]
        if binding["kind"] == "ClusterRoleBinding":
            cluster += role["rules"]
        else:
            namespaced.setdefault(namespace, []).extend(role["rules"])
    return _merge(cluster), {ns: _merge(rules) for ns, rules in namespaced.items()}


def _golden() -> dict[str, Any]:
    return yaml.safe_load((GOLDEN / "rbac.yaml").read_text())  # type: ignore[no-any-return]


def test_rbac_cluster_scope_matches_the_golden_allowlist() -> None:
    golden = _golden()["cluster"]
    cluster, namespaced = operator_permissions(render())
    assert cluster == golden["cluster-wide"]
    assert namespaced == {NAMESPACE: golden["release-namespace"]}
    assert operator_permissions(render("--set", "replicaCount=1"))[1] == {}  # no leader election, no Lease


def test_rbac_namespace_scope_matches_the_golden_allowlist() -> None:
    golden = _golden()["namespace"]
    cluster, namespaced = operator_permissions(render(*NAMESPACE_SCOPE))
    assert cluster == golden["cluster-wide"]
    assert namespaced == {
        "team-a": golden["watched"],
        "team-b": golden["watched"],
        NAMESPACE: golden["release-namespace"],
    }


def test_rbac_has_no_wildcards_and_aggregates_user_roles() -> None:
    objects = render(*NAMESPACE_SCOPE)
    for role in find(objects, "ClusterRole") + find(objects, "Role"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], (role["metadata"]["name"], rule)
    view, edit = find(objects, "ClusterRole", "mlmodel-view"), find(objects, "ClusterRole", "mlmodel-edit")
    assert view[0]["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert _merge(view[0]["rules"]) == {
        "modeldeployments.mlmodel.io": ["get", "list", "watch"],
        "modeldeployments.mlmodel.io/status": ["get", "list", "watch"],
    }
    labels = edit[0]["metadata"]["labels"]
    assert labels["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert labels["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    assert _merge(edit[0]["rules"]) == {
        "modeldeployments.mlmodel.io": ["create", "delete", "deletecollection", "patch", "update"]
    }
    assert not find(render("--set", "rbac.aggregateClusterRoles=false"), "ClusterRole", "mlmodel-view")


RESTRICTED_POD = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def test_pods_are_restricted_and_mount_a_token_only_to_call_the_api() -> None:
    objects = render()
    (deployment,) = find(objects, "Deployment")
    (test_pod,) = find(objects, "Pod")
    for pod in (deployment["spec"]["template"]["spec"], test_pod["spec"]):
        assert pod["securityContext"] == RESTRICTED_POD
        for container in pod["containers"]:
            assert container["securityContext"] == RESTRICTED_CONTAINER
            assert "privileged" not in container["securityContext"]
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod)
        assert all(set(volume) == {"name", "emptyDir"} for volume in pod.get("volumes", []))
        assert pod["automountServiceAccountToken"] is True  # both call the API server
    (account,) = find(objects, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False


def test_operator_gets_its_images_and_settings() -> None:
    objects = render("-f", str(CHART / "ci" / "custom-images-values.yaml"), "--set", "watchNamespaces={a,b}")
    (deployment,) = find(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["image"] == (
        "registry.example.com/mlmodel/operator@sha256:0000000000000000000000000000000000000000000000000000000000000000"
    )
    assert container["imagePullPolicy"] == "Always"
    assert env["SERVER_IMAGE"] == "registry.example.com/mlmodel/server:0.1.0-custom"
    assert env["ROUTER_IMAGE"] == "registry.example.com/mlmodel/router:0.1.0"
    assert env["WATCH_NAMESPACES"] == "a,b"
    assert env["HTTPS_PROXY"] == "http://proxy.example.com:3128"
    assert container["args"] == ["--resync-seconds=30"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["imagePullSecrets"] == [{"name": "registry-credentials"}]
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"healthz": 8080, "metrics": 9090, "weights": 8082}
    # Routers long-poll the leader for their weights through the operator's Service.
    assert (env["WEIGHTS_PORT"], env["WEIGHTS_ADDRESS"]) == ("8082", "mlmodel-operator.mlmodel-system.svc:8082")
    defaults = find(render(), "Deployment")[0]["spec"]
    assert defaults["replicas"] == 2
    assert defaults["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    default_env = {e["name"]: e.get("value") for e in defaults["template"]["spec"]["containers"][0]["env"]}
    assert (default_env["LEADER_ELECTION"], default_env["LEADER_ELECTION_ID"]) == ("true", "mlmodel-operator")
    single = find(render("--set", "replicaCount=1"), "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"]: e.get("value") for e in single["env"]}["LEADER_ELECTION"] == "false"
    assert default_env["ROUTER_IMAGE"] == "mlmodel-router:0.1.0"
    assert default_env["SERVER_IMAGE"] == "mlmodel-server:0.1.0"
    # Unset, the servers' and routers' default resources are the operator's built-in ones: no variable at all.
    assert not {"MLMODEL_SERVER_RESOURCES", "MLMODEL_ROUTER_RESOURCES"} & default_env.keys()
    annotations = defaults["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9090",
        "prometheus.io/path": "/metrics",
    }


def test_the_servers_and_routers_default_resources_reach_the_operator() -> None:
    """``serverResources`` and ``routerResources`` as the operator's environment, which it parses as it starts."""
    (deployment,) = find(render("-f", str(CHART / "ci" / "custom-images-values.yaml")), "Deployment")
    env = {e["name"]: e.get("value", "") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    servers = {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": 2, "memory": "2Gi"}}
    routers = {"requests": {"cpu": "20m", "memory": "32Mi"}}
    assert json.loads(env["MLMODEL_SERVER_RESOURCES"]) == servers
    assert json.loads(env["MLMODEL_ROUTER_RESOURCES"]) == routers
    assert config.parse([], env).defaults == spec.Defaults(servers, routers)
    (default,) = find(render(), "Deployment")[0]["spec"]["template"]["spec"]["containers"]
    assert config.parse([], {e["name"]: e.get("value", "") for e in default["env"]}).defaults == spec.Defaults()


def test_liveness_probe_and_its_stall_limit() -> None:
    def operator(*args: str) -> tuple[dict[str, Any], dict[str, str]]:
        (container,) = find(render(*args), "Deployment")[0]["spec"]["template"]["spec"]["containers"]
        return container["livenessProbe"], {e["name"]: e.get("value") for e in container["env"]}

    probe, env = operator()
    assert probe == {
        "httpGet": {"path": "/healthz", "port": "healthz"},
        "failureThreshold": 3,
        "periodSeconds": 15,
        "timeoutSeconds": 5,
    }
    assert "STALL_SECONDS" not in env  # the operator derives it from the resync period
    tuned, env = operator("--set", "livenessProbe.stallSeconds=120", "--set", "livenessProbe.periodSeconds=10")
    assert tuned == {**probe, "periodSeconds": 10}  # the stall limit is the operator's, not the kubelet's
    assert env["STALL_SECONDS"] == "120"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "imge.tag=1"], "additional properties 'imge' not allowed"),
        (["--set", "monitoring.serviceMonitor.enbled=true"], "additional properties 'enbled' not allowed"),
        (["--set", "rbac.scope=cluster-wide"], "rbac/scope"),
        (["--set", "replicaCount=-1"], "replicaCount"),
        (["--set", "rbac.scope=namespace"], "rbac.scope=namespace needs watchNamespaces"),
        (["--set", "serverResources.requests.cpus=1"], "additional properties 'cpus' not allowed"),
        (["--set-json", 'routerResources={"claims": []}'], "additional properties 'claims' not allowed"),
        (["--set", "serverResources.limits.memory=1GB"], "'1GB' does not match pattern"),
        (["--set-json", "routerResources.requests.cpu=0.5"], "routerResources/requests/cpu"),
        (["--set-json", 'serverResources={"requests": {}}'], "serverResources/requests"),
    ],
)
def test_bad_values_are_refused(args: list[str], message: str) -> None:
    result = helm("template", "mlmodel", str(CHART), *args, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_every_value_is_documented_and_in_the_schema() -> None:
    text = (CHART / "values.yaml").read_text()
    documented = [key for key, _ in generated.documented_values(text)]
    schema = json.loads((CHART / "values.schema.json").read_text())

    def leaves(node: Any, prefix: str) -> list[str]:
        if isinstance(node, dict) and node and not any(prefix == d for d in documented):
            return [leaf for k, v in node.items() for leaf in leaves(v, f"{prefix}{'.' if prefix else ''}{k}")]
        return [prefix]

    for leaf in leaves(yaml.safe_load(text), ""):
        assert any(leaf == d or leaf.startswith(d + ".") for d in documented), f"{leaf} has no `# --` comment"

    def schema_keys(node: dict[str, Any], prefix: str) -> list[str]:
        out = []
        for k, v in node.get("properties", {}).items():
            key = f"{prefix}{'.' if prefix else ''}{k}"
            out.append(key)
            if v.get("additionalProperties") is False and key not in documented:
                out += schema_keys(v, key)
        return out

    in_schema = set(schema_keys(schema, "")) - {"global"}
    assert set(documented) <= in_schema, set(documented) - in_schema
    groups = {d.rsplit(".", 1)[0] for d in documented if "." in d}
    assert in_schema <= set(documented) | groups, in_schema - set(documented) - groups


def test_crd_is_the_one_in_crds_byte_for_byte() -> None:
    source = generated.CRD_SOURCE.read_text()
    template = generated.CRD_TEMPLATE.read_text()
    spec = source[source.index("\nspec:\n") :]
    assert template.endswith(spec + "{{- end }}\n")
    (crd,) = find(render(), "CustomResourceDefinition")
    assert crd["spec"] == yaml.safe_load(source)["spec"]
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    (unkept,) = find(render("--set", "crds.keep=false"), "CustomResourceDefinition")
    assert "annotations" not in unkept["metadata"]
    assert not find(render("--set", "crds.enabled=false"), "CustomResourceDefinition")


def test_generated_files_are_up_to_date() -> None:
    for path, make in generated.generated(tool("helm")):
        assert path.read_text() == make(), f"{path.relative_to(REPO)} is stale: run `make manifests`"


def test_install_manifest_is_the_chart_with_its_namespace() -> None:
    docs = [d for d in yaml.safe_load_all(generated.INSTALL.read_text()) if d]
    assert docs[0]["kind"] == "Namespace" and docs[0]["metadata"]["name"] == NAMESPACE
    assert docs[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    kinds = sorted(d["kind"] for d in docs[1:])
    assert kinds == sorted(o["kind"] for o in render("--skip-tests"))


@pytest.fixture(scope="module")
def schemas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("schemas")
    kubeschemas.write(out)
    return out


def kubeconform(schemas: Path, manifest: str) -> subprocess.CompletedProcess[str]:
    """kubeconform -strict; the Prometheus Operator's kinds have no schema here (their CRDs
    are not in the Kubernetes module), so they are skipped and counted."""
    return subprocess.run(
        [
            str(tool("kubeconform")),
            "-strict",
            "-summary",
            "-schema-location",
            f"{schemas}/{kubeschemas.SCHEMA_LOCATION}",
            "-skip",
            "ServiceMonitor,PodMonitor,PrometheusRule",
            "-",
        ],
        input=manifest,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda v: v.name if v else "defaults")
def test_manifests_are_valid_kubernetes_objects(schemas: Path, values: Path | None) -> None:
    manifest = helm(
        "template", "mlmodel", str(CHART), "--namespace", NAMESPACE, *(["-f", str(values)] if values else [])
    ).stdout
    result = kubeconform(schemas, manifest)
    assert result.returncode == 0, result.stdout + result.stderr
    skipped = 4 if values and values.name == "monitoring-values.yaml" else 0
    count = len([d for d in yaml.safe_load_all(manifest) if d])
    assert f"{count} resources found" in result.stdout and f"Skipped: {skipped}" in result.stdout, result.stdout


def test_install_manifest_is_valid_and_the_validator_is_strict(schemas: Path) -> None:
    result = kubeconform(schemas, generated.INSTALL.read_text())
    assert result.returncode == 0 and "Invalid: 0, Errors: 0" in result.stdout, result.stdout + result.stderr
    misspelt = re.sub(r"(?m)^(\s+)imagePullPolicy:", r"\1imagePulPolicy:", generated.INSTALL.read_text())
    result = kubeconform(schemas, misspelt)
    assert result.returncode != 0 and "imagePulPolicy" in result.stdout, result.stdout


def test_dashboard_is_a_consistent_grafana_dashboard() -> None:
    """No dashboard linter installs here (grafana/dashboard-linter is not on the module proxy):
    the checks that do not need Grafana. Its queries run against a real Prometheus in e2e."""
    board = json.loads((CHART / "files" / "dashboard.json").read_text())
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        area = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells and grid["x"] + grid["w"] <= 24, f"{panel['title']} overlaps another panel"
        cells |= area
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
    variables = {v["name"] for v in board["templating"]["list"]}
    used = set(re.findall(r"\$(\w+)", json.dumps(panels))) - {"__rate_interval"}
    assert used <= variables, used - variables
    (config_map,) = find(render("--set", "monitoring.dashboard.enabled=true"), "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["mlmodel.json"]) == board


def test_network_policies_are_on_by_default_and_name_who_may_scrape() -> None:
    objects = render()
    (policy,) = find(objects, "NetworkPolicy")
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    metrics, routers, test = policy["spec"]["ingress"]
    assert metrics == {"from": [monitoring], "ports": [{"protocol": "TCP", "port": "metrics"}]}
    # Every ModelDeployment's router pods, in any namespace, and nobody else, long-poll the weights port.
    router_pods = {"app.kubernetes.io/name": "mlmodel-router", "app.kubernetes.io/component": "router"}
    assert routers == {
        "from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": router_pods}}],
        "ports": [{"protocol": "TCP", "port": "weights"}],
    }
    assert test["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "test"
    (deployment,) = find(objects, "Deployment")
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert (env["NETWORK_POLICIES"], json.loads(env["METRICS_FROM"])) == ("true", [monitoring])
    # Routers admit the operator's own pods to their admin port: a rollout's analysis reads their metrics.
    (operator,) = json.loads(env["OPERATOR_FROM"])
    assert operator["podSelector"] == deployment["spec"]["selector"]
    assert operator["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": deployment["metadata"]["namespace"]
    }
    off = render("--set", "networkPolicy.enabled=false", "--set", "networkPolicy.metricsFrom=null")
    assert not find(off, "NetworkPolicy")
    (deployment,) = find(off, "Deployment")
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert (env["NETWORK_POLICIES"], env["METRICS_FROM"]) == ("false", "[]")
