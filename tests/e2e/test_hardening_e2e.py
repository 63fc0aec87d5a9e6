"""No single request or slow client takes a model endpoint down (issue 23), on real pods: under 20 requests a
second through the entry Service of a ModelDeployment whose every request is mirrored to a shadow variant,
a declared 32 MiB POST gets the router's 413, a request that names a variant gets a 403 (the override is off by
default), and 200 slow connections to each of its Services (the entry Service, the router's, and each variant's,
the servers' own, which a pod can call past the router) hold nothing up: ``/predict`` answers within 1 s
meanwhile, through the entry Service and straight from each variant. The operator's NetworkPolicies, enforced by
the local cluster's kube-router: a pod of another namespace reaches the router's data port, but neither a server
nor the router's admin port; a pod of the namespace ``monitoring`` (the chart's default ``metricsFrom``) reaches
both; the router reaches the servers (the load). No request of the load fails, and no pod restarts."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from mlmodel_operator import names
from mlmodel_testing.cluster import Cluster
from mlmodel_testing.load import call, constant_load, summary
from mlmodel_testing.models import V1, V2, deploy_model_store, digests, md, variant
from mlmodel_testing.pods import connect_from, idle_pod, restarts
from mlmodel_testing.status import wait_settled

RATE = 20.0
SLOW_CONNECTIONS = 200


@contextlib.contextmanager
def _slow_connections(base: str, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections to ``base`` that have sent half a request's headers, and nothing more."""
    url = urlsplit(base)
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.create_connection((url.hostname or "", url.port or 80), timeout=5)
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: app")
            opened.append(s)
        yield opened
    finally:
        for s in opened:
            s.close()


def _declared_32_mib(base: str) -> tuple[int, bytes]:
    """A POST that declares a 32 MiB body and sends 64 KiB of it: the status and body of the answer."""
    url = urlsplit(base)
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 33554432\r\n\r\n"
    with socket.create_connection((url.hostname or "", url.port or 80), timeout=10) as s:
        s.sendall(head)
        with contextlib.suppress(OSError):  # the router may answer, and close, before it has it all
            s.sendall(b"x" * (64 << 10))
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    status_line, _, rest = reply.partition(b"\r\n")
    return int(status_line.split()[1]), rest.split(b"\r\n\r\n", 1)[1]


@contextlib.contextmanager
def _idle_in(cluster: Cluster, namespace: str, image: str) -> Iterator[str]:
    """An idle pod in ``namespace`` (made, and then deleted, if missing); yields the pod's name."""
    made = cluster.kubectl("get", "namespace", namespace, check=False).returncode != 0
    if made:
        cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    cluster.wait_until(
        f"default ServiceAccount in {namespace}",
        lambda: cluster.kubectl("-n", namespace, "get", "sa", "default", check=False).returncode == 0,
        60,
    )
    cluster.apply(idle_pod(namespace, "probe", image))
    try:
        cluster.kubectl("-n", namespace, "wait", "--for=condition=Ready", "pod/probe", "--timeout=90s")
        yield "probe"
    finally:
        cluster.kubectl("-n", namespace, "delete", "pod", "probe", "--wait=false", check=False)
        if made:
            cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def _reaches(cluster: Cluster, where: tuple[str, str], host: str, port: int, expected: bool) -> None:
    """Wait (for the policy agent to sync) until a connection from pod ``where`` to host:port opens, or not."""
    cluster.wait_until(
        f"{where[0]}/{where[1]} {'' if expected else 'not '}to reach {host}:{port}",
        lambda: (connect_from(cluster, *where, host, port) == 0) == expected,
        30,
    )


def test_a_huge_body_an_override_slow_clients_and_other_namespaces_fail_no_request_and_restart_no_pod(
    cluster: Cluster, namespace: str, operator: None, models: Path, server_image: str
) -> None:
    v1, v2 = digests(models)
    deploy_model_store(cluster, namespace, models)
    variants = [variant("stable", V1, v1, 100), variant("shadow", V2, v2, 0)]
    cluster.apply(md(namespace, variants, {"mirror": {"variant": "shadow"}}))
    status = wait_settled(cluster, namespace)
    assert status["weights"] == "stable=100,shadow=0", status
    pods = cluster.get("pods", namespace=namespace)["items"]
    before = restarts(pods)
    with contextlib.ExitStack() as stack:
        base = stack.enter_context(cluster.service_url(namespace, "iris", 80))
        load = stack.enter_context(constant_load(base, RATE))
        start = time.monotonic()

        code, body = _declared_32_mib(base)
        assert code == 413 and json.loads(body)["error"]["code"] == "too_large", body
        pinned = call(base, {names.HEADER_VARIANT: "shadow"})
        assert pinned.status == 403 and json.loads(pinned.body)["error"]["code"] == "override_forbidden", pinned

        direct = {
            v: stack.enter_context(cluster.service_url(namespace, names.child("iris", v), 80))
            for v in ("stable", "shadow")
        }
        with contextlib.ExitStack() as slow:
            for url in (base, *direct.values()):
                slow.enter_context(_slow_connections(url, SLOW_CONNECTIONS))
            timed = []
            for url in (base, base, *direct.values()):
                sent = time.monotonic()
                answer = call(url)
                timed.append((url, answer.status, round(time.monotonic() - sent, 3)))
        assert all(code == 200 and seconds < 1 for _, code, seconds in timed), timed

        stranger = (f"{namespace}-other", stack.enter_context(_idle_in(cluster, f"{namespace}-other", server_image)))
        monitoring = ("monitoring", stack.enter_context(_idle_in(cluster, "monitoring", server_image)))
        server = urlsplit(direct["stable"])
        routers = cluster.get("pods", namespace=namespace, selector=f"{names.LABEL_COMPONENT}=router")
        router_ip = next(p["status"]["podIP"] for p in routers["items"] if p["status"].get("podIP"))
        _reaches(cluster, stranger, router_ip, names.ROUTER_PORT, True)
        for where, expected in ((stranger, False), (monitoring, True)):
            _reaches(cluster, where, server.hostname or "", server.port or 80, expected)
            _reaches(cluster, where, router_ip, names.ROUTER_ADMIN_PORT, expected)
        elapsed = time.monotonic() - start
    results = load.since(start)
    assert results and all(r.status == 200 for r in results), summary(results)
    assert len(results) >= 0.8 * RATE * elapsed, (len(results), elapsed)
    after = restarts(cluster.get("pods", namespace=namespace)["items"])
    # Every pod that serves now, none restarted (a router pod of a configuration before the last may be gone).
    assert all(count == before.get(pod, 0) for pod, count in after.items()), (before, after)
