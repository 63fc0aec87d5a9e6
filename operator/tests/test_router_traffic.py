"""The split and the router's nginx configuration (against golden files)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from golden_files import assert_golden
from mlmodel_operator import spec
from mlmodel_operator.router import traffic
from test_render import CLUSTER_IPS, parsed

GOLDEN = Path(__file__).parent / "golden" / "router"
SOURCE = ("10.96.0.99", 8082)  # the operator's weights endpoint
TWO = [
    {"name": "stable", "modelUri": "file:///m/v1.joblib", "weight": 90},
    {"name": "canary", "modelUri": "file:///m/v2.joblib", "weight": 10},
]
THREE = [
    {"name": "stable", "modelUri": "file:///m/v1.joblib", "weight": 50},
    {"name": "canary", "modelUri": "file:///m/v2.joblib", "weight": 30},
    {"name": "shadow", "modelUri": "file:///m/v3.joblib", "weight": 20},
]
WITH_SHADOW = [*TWO, {"name": "shadow", "modelUri": "file:///m/v3.joblib", "weight": 0}]
CASES: dict[str, tuple[list[dict[str, Any]], dict[str, Any], list[str]]] = {
    "two-variants": (TWO, {}, ["stable", "canary"]),
    "three-variants": (THREE, {}, ["stable", "canary", "shadow"]),
    "weight-zero": (WITH_SHADOW, {}, ["stable", "canary", "shadow"]),
    "canary-not-ready": (TWO, {}, ["stable"]),
    "none-ready": (TWO, {}, []),
    "sticky": (TWO, {"stickyHeader": "X-User-Id"}, ["stable", "canary"]),
    "override-on": (TWO, {"allowOverride": True}, ["stable", "canary"]),
    "mirror": (WITH_SHADOW, {"mirror": {"variant": "shadow", "percent": 50}}, ["stable", "canary", "shadow"]),
    "mirror-no-compare": (
        WITH_SHADOW,
        {"mirror": {"variant": "shadow", "compare": False}},
        ["stable", "canary", "shadow"],
    ),
    "mirror-override": (
        WITH_SHADOW,
        {"mirror": {"variant": "shadow", "bufferSize": "1Mi", "tolerance": {"absolute": 0.5}}, "allowOverride": True},
        ["stable", "canary", "shadow"],
    ),
    "rate-limit": (TWO, {"rateLimit": {"requestsPerSecond": 20, "burst": 5}}, ["stable", "canary"]),
    "rate-limit-no-burst": (TWO, {"rateLimit": {"requestsPerSecond": 20}, "connectionsPerClient": 8}, ["stable"]),
    # nginx's map keywords as variant names: the override is Lua's, no map to escape them in.
    "keyword-names": (
        [{**TWO[0], "name": "default"}, {**TWO[1], "name": "include"}],
        {"allowOverride": True},
        ["default", "include"],
    ),
}


def config(case: str) -> traffic.RouterConfig:
    variants, routing, ready = CASES[case]
    md = parsed(variants=variants, routing=routing)
    return traffic.router_config(md, {name: CLUSTER_IPS[name] for name in ready}, source=SOURCE)


# The cases whose configurations differ: which variants there are, which are ready, and the mirror are routes.
CONFIGS = ["two-variants", "sticky", "override-on", "rate-limit", "rate-limit-no-burst"]


@pytest.mark.parametrize("case", CONFIGS)
def test_router_config_matches_golden(case: str) -> None:
    rendered = config(case).files[traffic.NGINX_CONF]
    assert_golden(GOLDEN / f"{case}.conf", rendered)


def test_routing_documents_match_golden() -> None:
    documents = [f"# {case}\n{traffic.routing_document(config(case).routes, 1)}" for case in sorted(CASES)]
    assert_golden(GOLDEN / "routes.txt", "\n".join(documents))


def test_the_configuration_stays_while_variants_come_go_get_ready_and_mirror() -> None:
    """What a rollout moves is in the routing document, so the router's pods (and a port-forward) stay."""
    same = ["two-variants", "three-variants", "weight-zero", "canary-not-ready", "none-ready", "mirror"]
    assert len({config(case).digest for case in same}) == 1
    assert len({config(case).digest for case in CONFIGS}) == len(CONFIGS)


@pytest.mark.parametrize("case", sorted(CASES))
def test_nginx_accepts_the_config(case: str, tmp_path: Path) -> None:
    """Debian's nginx with the Lua module, as in the router image (`make install` installs it)."""
    variants, routing, ready = CASES[case]
    md = parsed(variants=variants, routing=routing)
    rendered = traffic.router_config(
        md, {n: CLUSTER_IPS[n] for n in ready}, str(tmp_path), str(tmp_path), str(tmp_path), SOURCE
    )
    for name, text in rendered.files.items():
        (tmp_path / name).write_text(text)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    check = subprocess.run(
        [nginx, "-t", "-c", str(tmp_path / traffic.NGINX_CONF), "-e", "stderr"], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr


@pytest.mark.parametrize(
    ("ready", "expected"),
    [
        (["stable", "canary", "shadow"], {"stable": 50, "canary": 30, "shadow": 20}),
        (["stable", "canary"], {"stable": 63, "canary": 37, "shadow": 0}),  # 62.5 / 37.5: largest remainder
        (["canary"], {"stable": 0, "canary": 100, "shadow": 0}),
        ([], {"stable": 0, "canary": 0, "shadow": 0}),
    ],
)
def test_a_variant_that_is_not_ready_gives_its_share_to_the_ready_ones(
    ready: list[str], expected: dict[str, int]
) -> None:
    applied = traffic.applied_weights(parsed(variants=THREE), ready)
    assert applied == expected
    assert sum(applied.values()) in (0, 100)


def test_weight_zero_variants_get_nothing_even_when_the_others_are_down() -> None:
    md = parsed(variants=WITH_SHADOW)
    assert traffic.applied_weights(md, ["shadow"]) == {"stable": 0, "canary": 0, "shadow": 0}


def test_the_digest_names_the_config() -> None:
    a = config("two-variants")
    assert a.digest[:16] in a.files[traffic.NGINX_CONF]
    assert config("two-variants") == a


def test_parse_reads_routing() -> None:
    md = parsed(
        variants=WITH_SHADOW,
        routing={
            "router": "always",
            "replicas": 3,
            "stickyHeader": "X-User-Id",
            "allowOverride": True,
            "mirror": {"variant": "shadow", "percent": 25, "bufferSize": "1Mi", "compare": False},
            "rateLimit": {"requestsPerSecond": 10, "burst": 2},
            "connectionsPerClient": 8,
        },
        maxRequestSize="32Mi",
    )
    assert md.routing == spec.Routing(
        always=True,
        replicas=3,
        sticky_header="X-User-Id",
        allow_override=True,
        mirror=spec.Mirror("shadow", 25, 1 << 20, compare=False),
        rate_limit=spec.RateLimit(10, 2),
        connections_per_client=8,
    )
    assert md.max_request_bytes == md.request_limit == 32 << 20


def test_the_defaults_refuse_the_override_and_cap_bodies_at_the_servers_limit() -> None:
    md = parsed(variants=WITH_SHADOW, routing={"mirror": {"variant": "shadow"}})
    assert not md.routing.allow_override
    assert md.routing.mirror == spec.Mirror("shadow", 100, 4 << 20)
    assert md.routing.connections_per_client == 64
    assert md.max_request_bytes is None and md.request_limit == 10 << 20  # the server's MAX_BODY_BYTES default


def test_a_bad_max_request_size_names_the_field() -> None:
    with pytest.raises(spec.SpecError, match=r"^spec.maxRequestSize: not a quantity"):
        parsed(maxRequestSize="ten megs")
    with pytest.raises(spec.SpecError, match=r"^spec.routing.mirror.bufferSize: must be more than 0"):
        parsed(variants=WITH_SHADOW, routing={"mirror": {"variant": "shadow", "bufferSize": 0}})


def test_the_routing_document_keeps_its_serial_while_the_routes_stay_and_takes_the_next_when_they_move() -> None:
    addresses = {"stable": "10.96.0.10:80", "canary": "10.96.0.11:80"}
    routes = traffic.Routes({"stable": 90, "canary": 10}, addresses)
    serial, first = traffic.next_document(routes, None)
    assert (serial, first) == (1, "serial 1\nstable 90 10.96.0.10:80\ncanary 10 10.96.0.11:80\n")
    assert traffic.parse_document(first) == (1, routes)
    assert traffic.next_document(routes, first) == (1, first)
    moved = traffic.Routes({"stable": 50, "canary": 50}, addresses)
    assert traffic.next_document(moved, first) == (2, "serial 2\nstable 50 10.96.0.10:80\ncanary 50 10.96.0.11:80\n")
    # A variant no longer ready, or a mirror switched on, is a new document too.
    gone = traffic.Routes({"stable": 100, "canary": 0}, {"stable": "10.96.0.10:80", "canary": None})
    assert traffic.next_document(gone, first) == (2, "serial 2\nstable 100 10.96.0.10:80\ncanary 0 -\n")
    mirrored = traffic.Routes(routes.weights, addresses, traffic.MirrorRoute("canary", 5, 1024, False, "absolute=1"))
    _, second = traffic.next_document(mirrored, first)
    assert second.endswith("\nmirror canary 5 1024 nocompare absolute=1\n")
    assert traffic.parse_document(second) == (2, mirrored)
    # Someone else's text in the ConfigMap (a hand edit) is replaced, from serial 1.
    assert traffic.next_document(gone, "stable=100") == (1, "serial 1\nstable 100 10.96.0.10:80\ncanary 0 -\n")
    for bad in ("serial x\n", "", "serial 1\nstable 90\n", "serial 1\nstable x 10.0.0.1:80\n"):
        assert traffic.parse_document(bad) is None, bad
