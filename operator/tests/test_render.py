"""The pure core: parsing, rendering (against golden YAML), traffic, drift."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from golden_files import assert_golden
from mlmodel_operator import config, drift, names, netpol, render, spec
from mlmodel_operator.router import objects, traffic

GOLDEN = Path(__file__).parent / "golden"
SHA = "d466fded41c4a559228ec0a59d7fab20d29353302d76491af19d4ce400b63cb4"


def resource(**spec_overrides: Any) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": "iris", "namespace": "ml", "uid": "uid-1", "generation": 3},
        "spec": {
            "variants": [
                {
                    "name": "stable",
                    "modelUri": "https://models.example.com/iris/v1.joblib",
                    "modelSha256": SHA,
                    "replicas": 2,
                    "weight": 90,
                },
                {
                    "name": "canary",
                    "modelUri": "pvc://models/iris/v2.joblib",
                    "weight": 10,
                    "image": "registry.example.com/mlmodel-server:0.2.0",
                    "autoscaling": {"minReplicas": 1, "maxReplicas": 4, "targetCPUUtilizationPercentage": 70},
                    "resources": {"requests": {"cpu": "500m"}, "limits": {"cpu": "2", "memory": "1Gi"}},
                    "env": [{"name": "WORKERS", "value": "3"}, {"name": "LOG_LEVEL", "value": "debug"}],
                    "podAnnotations": {"prometheus.io/scrape": "true"},
                    "probes": {"readiness": {"periodSeconds": 2}},
                },
            ],
            "apiKeySecret": {"name": "iris-keys"},
            **spec_overrides,
        },
    }


def parsed(**overrides: Any) -> spec.ModelDeployment:
    return spec.parse(resource(**overrides), default_image="mlmodel-server:0.1.0")


ROUTER_IMAGE = "mlmodel-router:0.1.0"
DEFAULT_ACCESS = config.parse([], env={}).access  # the default: Prometheus in `monitoring` scrapes
assert DEFAULT_ACCESS is not None
ACCESS: netpol.Access = DEFAULT_ACCESS
SINCE = "2026-01-01T00:00:00Z"  # when the entry Service moved where it leads
CLUSTER_IPS = {
    "stable": "10.96.0.10",
    "canary": "10.96.0.11",
    "shadow": "10.96.0.12",
    "default": "10.96.0.13",
    "include": "10.96.0.14",
}


def children(md: spec.ModelDeployment) -> list[dict[str, Any]]:
    """Everything the operator applies for ``md`` once every variant is ready."""
    found = render.variant_children(md)
    if md.routed:
        config = traffic.router_config(md, {v.name: CLUSTER_IPS[v.name] for v in md.variants})
        found += objects.children(md, config, traffic.routing_document(config.routes, 1), ROUTER_IMAGE)
    found += netpol.network_policies(md, ACCESS, behind_router=md.routed)
    return [*found, render.entry_service(md, None if md.routed else md.variants[0].name, SINCE)]


@pytest.mark.parametrize("case", ["iris-canary", "iris-single"])
def test_children_match_golden_yaml(case: str) -> None:
    md = (
        parsed()
        if case == "iris-canary"
        else parsed(variants=[{"name": "stable", "modelUri": "file:///m/iris.joblib"}])
    )
    rendered = yaml.safe_dump_all(children(md), sort_keys=False)
    assert_golden(GOLDEN / f"{case}.yaml", rendered)


def test_hpa_owns_replicas() -> None:
    md = parsed()
    canary = render.deployment(md, md.variant("canary"))
    assert "replicas" not in canary["spec"]
    assert render.deployment(md, md.variant("stable"))["spec"]["replicas"] == 2
    assert [o["kind"] for o in render.variant_children(md)].count("HorizontalPodAutoscaler") == 1


def test_environment_and_volumes() -> None:
    md = parsed()
    pod = render.deployment(md, md.variant("canary"))["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["MODEL_URI"] == "file:///mnt/models/iris/v2.joblib"
    assert env["WORKERS"] == "3"  # the user's value wins over the one derived from the CPU limit
    assert env["API_KEYS_FILE"] == "/etc/mlmodel/api-keys/keys"
    assert {"name": "model", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}} in pod["volumes"]
    stable = render.deployment(md, md.variant("stable"))["spec"]["template"]["spec"]["containers"][0]
    stable_env = {e["name"]: e["value"] for e in stable["env"]}
    assert stable_env["MODEL_SHA256"] == SHA and stable_env["WORKERS"] == "1"
    assert "MAX_BODY_BYTES" not in stable_env  # the server's own default, which the router's limit equals


def test_max_request_size_is_the_servers_limit_too() -> None:
    md = parsed(maxRequestSize="32Mi")
    for variant in md.variants:
        container = render.deployment(md, variant)["spec"]["template"]["spec"]["containers"][0]
        assert {"name": "MAX_BODY_BYTES", "value": str(32 << 20)} in container["env"]


def test_a_single_variant_is_served_without_a_router() -> None:
    md = parsed(variants=[{"name": "only", "modelUri": "file:///m.joblib"}])
    assert md.variants[0].weight == 100 and not md.routed
    applied = traffic.applied_weights(md, ["only"])
    assert traffic.weights(applied) == "only=100"
    assert traffic.routing_note(md, applied, via_router=False) == (
        "the entry Service sends traffic straight to the pods: only=100"
    )
    assert render.entry_service(md, "only", SINCE)["spec"]["selector"][names.LABEL_VARIANT] == "only"


@pytest.mark.parametrize(
    "routing", [{"router": "always"}, {"stickyHeader": "X-User-Id"}, {"rateLimit": {"requestsPerSecond": 5}}]
)
def test_a_routing_feature_brings_a_router_for_one_variant(routing: dict[str, Any]) -> None:
    assert parsed(variants=[{"name": "only", "modelUri": "file:///m.joblib"}], routing=routing).routed


def test_several_variants_are_routed_through_the_router() -> None:
    md = parsed()
    assert md.routed
    assert render.entry_service(md, None, SINCE)["spec"]["selector"] == names.router_selector("iris")
    config = traffic.router_config(md, CLUSTER_IPS)
    deployment = objects.deployment(md, config, ROUTER_IMAGE)
    volume = deployment["spec"]["template"]["spec"]["volumes"][0]
    assert volume["configMap"]["name"] == objects.config_map(md, config)["metadata"]["name"]
    assert deployment["spec"]["template"]["metadata"]["annotations"][names.ANNOTATION_ROUTER_CONFIG] == config.digest
    document = traffic.routing_document(config.routes, 1)
    assert [o["kind"] for o in objects.children(md, config, document, ROUTER_IMAGE)] == [
        "ConfigMap",
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
    ]
    one = parsed(routing={"replicas": 1})
    kinds = [o["kind"] for o in objects.children(one, config, document, ROUTER_IMAGE)]
    assert kinds == ["ConfigMap", "ConfigMap", "Deployment"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"variants": []}, "spec.variants: at least one"),
        ({"variants": [{"name": "a", "modelUri": "ftp://x/m.joblib"}]}, "spec.variants[0].modelUri: scheme"),
        ({"variants": [{"name": "a", "modelUri": "https://x/m.joblib"}]}, "spec.variants[0].modelSha256"),
        ({"variants": [{"name": "a", "modelUri": "pvc://claim"}]}, "pvc://<claim>/<path>"),
        (
            {
                "variants": [
                    {"name": "a", "modelUri": "file:///a", "weight": 50},
                    {"name": "b", "modelUri": "file:///b", "weight": 40},
                ]
            },
            "must sum to 100 (percent of traffic), got 90",
        ),
        (
            {
                "variants": [
                    {"name": "a", "modelUri": "file:///a", "weight": 50},
                    {"name": "b", "modelUri": "file:///b"},
                ]
            },
            "spec.variants[1].weight: required",
        ),
        (
            {
                "variants": [
                    {"name": "a", "modelUri": "file:///a", "weight": 50},
                    {"name": "a", "modelUri": "file:///b", "weight": 50},
                ]
            },
            "duplicate variant names: a",
        ),
        (
            {"variants": [{"name": "a", "modelUri": "file:///a", "autoscaling": {"minReplicas": 5, "maxReplicas": 2}}]},
            "minReplicas must not exceed maxReplicas",
        ),
        (
            {"variants": [{"name": "a", "modelUri": "file:///a", "autoscaling": {"maxReplicas": 2}}]},
            "spec.variants[0].resources.requests.cpu: required with autoscaling",
        ),
        ({"routing": {"mirror": {"variant": "shadow"}}}, "spec.routing.mirror.variant: no variant is called 'shadow'"),
        ({"routing": {"stickyHeader": "X User"}}, "spec.routing.stickyHeader: not an HTTP header name"),
        *(
            (
                {"variants": [{"name": "a", "modelUri": "file:///a", "env": [{"name": "X"}, {"name": name}]}]},
                f"spec.variants[0].env[1].name: {name} is set by the operator",
            )
            for name in names.RESERVED_ENV
        ),
    ],
)
def test_specs_the_operator_refuses(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(spec.SpecError) as caught:
        parsed(**overrides)
    assert message in str(caught.value)


def test_unpinned_remote_is_allowed_when_asked() -> None:
    md = parsed(variants=[{"name": "a", "modelUri": "https://x/m.joblib", "allowUnpinned": True}])
    env = {
        e["name"]: e["value"]
        for e in render.deployment(md, md.variants[0])["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["ALLOW_UNPINNED"] == "true" and "MODEL_SHA256" not in env


def test_drift_ignores_defaults_and_quantity_spelling() -> None:
    md = parsed()
    desired = render.deployment(md, md.variant("canary"))
    live = copy.deepcopy(desired)
    live["spec"]["progressDeadlineSeconds"] = 600
    live["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "2000m"
    live["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"] = "/dev/termination-log"
    del live["spec"]["template"]["spec"]["containers"][0]["startupProbe"]["initialDelaySeconds"]  # 0: omitted
    assert drift.drifted(desired, live) is None
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:latest"
    assert drift.drifted(desired, live) == ".spec.template.spec.containers[server].image"
    del live["spec"]["template"]["metadata"]["labels"][names.LABEL_VARIANT]
    assert drift.drifted(desired, live) == ".spec.template.metadata.labels.mlmodel.io/variant"


def test_drift_is_judged_the_way_server_side_apply_merges() -> None:
    md = parsed()
    desired = drift.stamp(render.deployment(md, md.variant("canary")))
    live = copy.deepcopy(desired)
    pod = live["spec"]["template"]["spec"]
    # Other managers' additions are not drift: an injected sidecar (before ours), `kubectl set env`.
    pod["containers"].insert(0, {"name": "istio-proxy", "image": "proxy:1"})
    pod["containers"][1]["env"].append({"name": "DEBUG", "value": "1"})
    pod["volumes"].append({"name": "istio-certs", "emptyDir": {}})
    assert drift.why(desired, live) is None
    # What the operator applied, changed or gone, is; an atomic list (of strings) must be equal.
    pod["containers"][1]["env"] = [e for e in pod["containers"][1]["env"] if e["name"] != names.ENV_MODEL_NAME]
    assert drift.why(desired, live) == f"drift at .spec.template.spec.containers[server].env[{names.ENV_MODEL_NAME}]"
    live = copy.deepcopy(desired)
    live["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["drop"] = []
    where = ".spec.template.spec.containers[server].securityContext.capabilities.drop"
    assert drift.why(desired, live) == f"drift at {where}"


def test_a_field_the_spec_no_longer_sets_changes_the_stamp() -> None:
    """A subset check alone would leave a removed field on the child for good; the stamp tells the
    pass to apply, and server-side apply then removes the field."""
    with_env = parsed(variants=[{"name": "a", "modelUri": "file:///a", "env": [{"name": "FOO", "value": "1"}]}])
    without = parsed(variants=[{"name": "a", "modelUri": "file:///a"}])
    live = drift.stamp(render.deployment(with_env, with_env.variants[0]))
    assert drift.drifted(render.deployment(without, without.variants[0]), live) is None  # FOO is only extra
    desired = drift.stamp(render.deployment(without, without.variants[0]))
    assert drift.why(desired, live) == "the desired state changed"
    assert drift.why(live, live) is None
    assert drift.stamp(live) == live  # stamping is idempotent


def test_child_names_are_capped_at_63() -> None:
    with pytest.raises(ValueError, match="longer than 63"):
        names.child("m" * 40, "v" * 30)


@pytest.mark.parametrize(
    ("variant", "budget"),
    [
        ({"replicas": 1}, False),
        ({"replicas": 2}, True),
        # With an HPA the pods can go down to minReplicas: a budget of one over one pod blocks drains.
        ({"replicas": 3, "autoscaling": {"minReplicas": 1, "maxReplicas": 5}}, False),
        ({"replicas": 1, "autoscaling": {"minReplicas": 2, "maxReplicas": 5}}, True),
    ],
)
def test_a_variant_that_always_runs_several_pods_gets_a_disruption_budget(
    variant: dict[str, Any], budget: bool
) -> None:
    item = {"name": "a", "modelUri": "file:///a", "resources": {"requests": {"cpu": "1"}}, **variant}
    md = parsed(variants=[item])
    pdbs = [o for o in render.variant_children(md) if o["kind"] == "PodDisruptionBudget"]
    assert bool(pdbs) is budget
    if budget:
        assert pdbs[0]["metadata"]["name"] == "iris-a"
        assert pdbs[0]["spec"] == {"minAvailable": 1, "selector": {"matchLabels": names.selector("iris", "a")}}


def test_serving_pods_are_hardened_and_get_default_resources() -> None:
    md = parsed(variants=[{"name": "a", "modelUri": "file:///a"}])
    pod = render.deployment(md, md.variants[0])["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["containers"][0]["resources"] == spec.DEFAULT_SERVER_RESOURCES
    assert pod["volumes"][0] == {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}  # scratch: nothing downloaded
    (spread,) = pod["topologySpreadConstraints"]
    assert (spread["topologyKey"], spread["whenUnsatisfiable"]) == ("kubernetes.io/hostname", "ScheduleAnyway")
    assert spread["labelSelector"]["matchLabels"] == names.selector("iris", "a")
    given = parsed()
    canary = render.deployment(given, given.variant("canary"))["spec"]["template"]["spec"]["containers"][0]
    assert canary["resources"] == {"requests": {"cpu": "500m"}, "limits": {"cpu": "2", "memory": "1Gi"}}


@pytest.mark.parametrize(
    ("cache", "size_limit", "storage"),
    [
        (None, "2304Mi", "1Gi"),  # the default cache, 1Gi: two copies and 256Mi of scratch
        ("5Gi", "10496Mi", "5Gi"),
        (1536 << 20, "3328Mi", "1536Mi"),
        ("2G", "4168394Ki", "1953125Ki"),
        ("1.5e9", "3268435456", "1500000000"),
    ],
)
def test_a_downloaded_models_tmp_holds_two_copies_of_its_cache(
    cache: str | int | None, size_limit: str, storage: str
) -> None:
    item: dict[str, Any] = {"name": "a", "modelUri": "s3://models/m.joblib", "modelSha256": SHA}
    if cache is not None:
        item["modelCacheSize"] = cache
    md = parsed(variants=[item])
    pod = render.deployment(md, md.variants[0])["spec"]["template"]["spec"]
    assert pod["volumes"][0] == {"name": "tmp", "emptyDir": {"sizeLimit": size_limit}}
    resources = pod["containers"][0]["resources"]
    assert resources["requests"] == {**spec.DEFAULT_SERVER_RESOURCES["requests"], "ephemeral-storage": storage}
    assert resources["limits"] == spec.DEFAULT_SERVER_RESOURCES["limits"]


def test_the_specs_own_ephemeral_storage_wins() -> None:
    remote = {"name": "a", "modelUri": "https://x/m.joblib", "modelSha256": SHA, "modelCacheSize": "4Gi"}
    for resources in (
        {"requests": {"ephemeral-storage": "6Gi"}},
        {"limits": {"ephemeral-storage": "3Gi"}},  # a request above this limit would be refused
    ):
        md = parsed(variants=[{**remote, "resources": resources}])
        container = render.deployment(md, md.variants[0])["spec"]["template"]["spec"]["containers"][0]
        assert container["resources"] == resources
    md = parsed(variants=[{**remote, "resources": {"requests": {"cpu": "1"}}}])
    container = render.deployment(md, md.variants[0])["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {"requests": {"cpu": "1", "ephemeral-storage": "4Gi"}}


# The e2e suite's defaults (hack/testing/mlmodel_testing/release.py): smaller CPU requests than the built-in ones.
SMALL_SERVERS = {"requests": {"cpu": "20m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
SMALL_ROUTERS = {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}}


def defaults(servers: dict[str, Any] = SMALL_SERVERS, routers: dict[str, Any] = SMALL_ROUTERS) -> spec.Defaults:
    """The operator's defaults as its flags set them."""
    flags = ["--server-resources", json.dumps(servers), "--router-resources", json.dumps(routers)]
    return config.parse(flags, env={}).defaults


def server_container(md: spec.ModelDeployment, name: str) -> dict[str, Any]:
    container: dict[str, Any] = render.deployment(md, md.variant(name))["spec"]["template"]["spec"]["containers"][0]
    return container


def test_the_operators_default_resources_go_where_a_spec_sets_none_and_a_specs_own_win() -> None:
    md = spec.parse(resource(), default_image="mlmodel-server:0.1.0", defaults=defaults())
    # stable sets none and downloads its model: the default, and the disk its cache takes, as with the built-in one.
    stable = server_container(md, "stable")["resources"]
    assert stable == {
        "requests": {**SMALL_SERVERS["requests"], "ephemeral-storage": "1Gi"},
        "limits": {"memory": "1Gi"},
    }
    # canary sets its own: they win whole, nothing of the default is merged in.
    assert server_container(md, "canary")["resources"] == {
        "requests": {"cpu": "500m"},
        "limits": {"cpu": "2", "memory": "1Gi"},
    }
    router = objects.deployment(md, traffic.router_config(md, CLUSTER_IPS), ROUTER_IMAGE)
    assert router["spec"]["template"]["spec"]["containers"][0]["resources"] == SMALL_ROUTERS
    own = {"requests": {"cpu": "200m", "memory": "64Mi"}}
    routed = spec.parse(resource(routing={"resources": own}), default_image="s:1", defaults=defaults())
    router = objects.deployment(routed, traffic.router_config(routed, CLUSTER_IPS), ROUTER_IMAGE)
    assert router["spec"]["template"]["spec"]["containers"][0]["resources"] == own
    # A model read in place: the default exactly, as the built-in one would be.
    local = spec.parse(
        resource(variants=[{"name": "a", "modelUri": "file:///a"}]), default_image="s:1", defaults=defaults()
    )
    assert server_container(local, "a")["resources"] == SMALL_SERVERS


def test_unset_the_operators_defaults_are_the_built_in_ones() -> None:
    assert config.parse([], env={}).defaults == spec.Defaults()
    assert spec.Defaults() == spec.Defaults(spec.DEFAULT_SERVER_RESOURCES, spec.DEFAULT_ROUTER_RESOURCES)
    assert spec.DEFAULT_SERVER_RESOURCES == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"memory": "1Gi"},
    }
    assert spec.DEFAULT_ROUTER_RESOURCES == {
        "requests": {"cpu": "50m", "memory": "32Mi"},
        "limits": {"memory": "128Mi"},
    }


@pytest.mark.parametrize(
    ("servers", "workers", "storage"),
    [
        ({"limits": {"cpu": "2", "memory": "2Gi"}}, "2", "1Gi"),  # a worker per CPU of the limit
        ({"requests": {"cpu": "1500m"}}, "2", "1Gi"),  # else of the request
        ({"requests": {"memory": "512Mi"}}, "1", "1Gi"),
        ({"requests": {"cpu": "1", "ephemeral-storage": "3Gi"}}, "1", "3Gi"),  # it sizes the disk itself
    ],
)
def test_a_configured_default_sizes_the_workers_and_the_disk_as_a_variants_own_would(
    servers: dict[str, Any], workers: str, storage: str
) -> None:
    item = {"name": "a", "modelUri": "s3://models/m.joblib", "modelSha256": SHA}
    md = spec.parse(resource(variants=[item]), default_image="s:1", defaults=defaults(servers=servers))
    container = server_container(md, "a")
    assert {e["name"]: e["value"] for e in container["env"]}["WORKERS"] == workers
    assert container["resources"]["requests"]["ephemeral-storage"] == storage
    given = spec.parse(resource(variants=[{**item, "resources": servers}]), default_image="s:1")
    assert server_container(given, "a") == container  # the same pod as a variant that sets them


def test_the_default_resources_come_from_flags_over_the_environment() -> None:
    servers, routers = json.dumps(SMALL_SERVERS), json.dumps(SMALL_ROUTERS)
    env = {"MLMODEL_SERVER_RESOURCES": servers, "MLMODEL_ROUTER_RESOURCES": routers}
    assert config.parse([], env=env).defaults == spec.Defaults(SMALL_SERVERS, SMALL_ROUTERS)
    flagged = config.parse(["--server-resources", '{"limits": {"memory": "2Gi"}}'], env=env).defaults
    assert flagged == spec.Defaults({"limits": {"memory": "2Gi"}}, SMALL_ROUTERS)
    empty = {"MLMODEL_SERVER_RESOURCES": "", "MLMODEL_ROUTER_RESOURCES": ""}  # as unset
    assert config.parse([], env=empty).defaults == spec.Defaults()
    whole = '{"requests": {"cpu": 1, "memory": "1.5Gi", "ephemeral-storage": "2e9"}, "limits": {"cpu": "2"}}'
    assert config.parse(["--router-resources", whole], env={}).defaults.router_resources == json.loads(whole)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not json", "not JSON"),
        ('[{"requests": {}}]', "not a JSON object of requests and limits"),
        ('{"request": {"cpu": "1"}}', "unknown key 'request': a container's resources are requests and limits"),
        ('{"claims": [{"name": "gpu"}]}', "unknown key 'claims'"),
        ('{"requests": "1"}', "requests: not an object of quantities by resource name"),
        ('{"requests": {"cpus": "1"}}', "requests: unknown resource 'cpus', not one of cpu, memory, ephemeral-storage"),
        ('{"limits": {"memory": "1 GB"}}', "limits.memory: not a quantity such as 500m, 2 or 256Mi: '1 GB'"),
        ('{"requests": {"cpu": "-1"}}', "requests.cpu: not a quantity"),
        ('{"requests": {"cpu": 0.5}}', "requests.cpu: not a quantity"),  # the CRD takes a string or an integer
        ('{"requests": {"cpu": true}}', "requests.cpu: not a quantity"),
        ("{}", "no request nor limit"),
        ('{"requests": {}}', "no request nor limit"),
        (
            '{"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}',
            "requests.memory (2Gi) exceeds limits.memory (1Gi)",
        ),
    ],
)
def test_a_bad_default_resources_setting_is_refused_naming_the_flag(
    value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for flag, variable in (
        ("--server-resources", "MLMODEL_SERVER_RESOURCES"),
        ("--router-resources", "MLMODEL_ROUTER_RESOURCES"),
    ):
        for argv, env in (([flag, value], {}), ([], {variable: value})):
            with pytest.raises(SystemExit):
                config.parse(argv, env=env)
            assert f"argument {flag}: {message}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("cache", "message"),
    [
        ("0", "spec.variants[0].modelCacheSize: must be more than 0"),
        ("-1Gi", "spec.variants[0].modelCacheSize: not a quantity of bytes"),
        ("1 GB", "spec.variants[0].modelCacheSize: not a quantity of bytes"),
        ("2Ei", "at most 1Ei"),
    ],
)
def test_a_model_cache_size_must_be_a_positive_quantity(cache: str, message: str) -> None:
    with pytest.raises(spec.SpecError, match=re.escape(message)):
        parsed(variants=[{"name": "a", "modelUri": "https://x/m.joblib", "modelSha256": SHA, "modelCacheSize": cache}])


@pytest.mark.parametrize("uri", ["file:///m.joblib", "pvc://claim/m.joblib"])
def test_a_model_read_in_place_has_no_cache(uri: str) -> None:
    with pytest.raises(spec.SpecError, match=r"spec.variants\[0\].modelCacheSize: only for a downloaded model"):
        parsed(variants=[{"name": "a", "modelUri": uri, "modelCacheSize": "1Gi"}])
    md = parsed(variants=[{"name": "a", "modelUri": uri}])
    container = render.deployment(md, md.variants[0])["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == spec.DEFAULT_SERVER_RESOURCES  # no ephemeral-storage request


def test_the_routers_tmp_is_limited() -> None:
    md = parsed()
    pod = objects.deployment(md, traffic.router_config(md, CLUSTER_IPS), ROUTER_IMAGE)["spec"]["template"]["spec"]
    tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
    assert tmp == {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}


def test_network_policies_let_only_the_router_and_monitoring_reach_a_server() -> None:
    md = parsed()
    servers, router = netpol.network_policies(md, ACCESS, behind_router=True)
    assert servers["spec"]["podSelector"]["matchLabels"] == names.selector("iris")
    sources = [rule.get("from") for rule in servers["spec"]["ingress"]]
    assert sources == [[{"podSelector": {"matchLabels": names.router_selector("iris")}}], list(ACCESS.metrics_from)]
    data, admin = router["spec"]["ingress"]
    assert "from" not in data and data["ports"] == [{"protocol": "TCP", "port": names.ROUTER_PORT}]
    assert admin == {"from": list(ACCESS.metrics_from), "ports": [{"protocol": "TCP", "port": names.ROUTER_ADMIN_PORT}]}
    # The operator reads the routers' metrics for a rollout's analysis: its peers join monitoring's on the admin port.
    operator = {"podSelector": {"matchLabels": {"app.kubernetes.io/component": "operator"}}}
    access = netpol.Access(ACCESS.metrics_from, (operator,))
    _, (_, admin) = (p["spec"]["ingress"] for p in netpol.network_policies(md, access, behind_router=True))
    assert admin["from"] == [*ACCESS.metrics_from, operator]
    parsed_access = config.parse(["--operator-from", json.dumps([operator])], env={}).access
    assert parsed_access is not None and parsed_access.operator_from == (operator,)


def test_with_no_metrics_peers_no_rule_lets_everyone_in() -> None:
    for md in (parsed(), parsed(variants=[{"name": "stable", "modelUri": "file:///m/iris.joblib"}])):
        policies = netpol.network_policies(md, netpol.Access(()), behind_router=md.routed)
        rules = [rule for policy in policies for rule in policy["spec"]["ingress"]]
        open_ports = {rule["ports"][0]["port"] for rule in rules if not rule.get("from")}
        # A client's entry: the router's data port, or with no router the server's own.
        assert open_ports == ({names.ROUTER_PORT} if md.routed else {names.SERVER_PORT})
        assert all(rule.get("from") != [] for rule in rules)


def test_metrics_from_is_a_json_list_of_peers() -> None:
    peers = '[{"podSelector": {"matchLabels": {"app": "prometheus"}}, "namespaceSelector": {}}]'
    assert config.parse(["--metrics-from", peers], env={}).access == netpol.Access(
        ({"podSelector": {"matchLabels": {"app": "prometheus"}}, "namespaceSelector": {}},)
    )
    assert config.parse([], env={"NETWORK_POLICIES": "false"}).access is None
    for bad in ('{"podSelector": {}}', "[1]", "not json"):
        with pytest.raises(SystemExit):
            config.parse(["--metrics-from", bad], env={})


def test_until_the_entry_service_leads_to_the_router_the_servers_stay_open() -> None:
    (servers, router) = netpol.network_policies(parsed(), ACCESS, behind_router=False)
    assert servers["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": names.SERVER_PORT}]}]
    assert router["metadata"]["name"] == names.router("iris")
