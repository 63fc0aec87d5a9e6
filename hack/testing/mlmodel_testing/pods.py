"""A pod that calls a Service by its DNS name from inside the cluster, the restricted security context every
test pod runs with, and a prediction from this host."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from mlmodel_testing.cluster import Cluster
from mlmodel_testing.load import IRIS_ROW

RESTRICTED_POD: dict[str, Any] = {
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


# Runs inside a pod: POST /predict to the Service by DNS name, retrying until a deadline.
CLIENT_SCRIPT = """
import json, sys, time, urllib.request
url = sys.argv[1]
body = json.dumps({"instances": [__ROW__]}).encode()
deadline = time.monotonic() + 90
while True:
    try:
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            print("RESULT " + r.read().decode(), flush=True)
            break
    except Exception as e:
        print("retry: " + repr(e), flush=True)
        if time.monotonic() > deadline:
            sys.exit(1)
        time.sleep(1)
""".replace("__ROW__", json.dumps(IRIS_ROW))


def client_pod(namespace: str, image: str, url: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "dns-client", "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": RESTRICTED_POD,
            "containers": [
                {
                    "name": "client",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python3", "-c", CLIENT_SCRIPT, url],
                    "securityContext": RESTRICTED_CONTAINER,
                    "resources": {
                        "requests": {"cpu": "50m", "memory": "32Mi"},
                        "limits": {"memory": "256Mi"},
                    },
                }
            ],
        },
    }


def client_result(cluster: Cluster, namespace: str) -> dict[str, Any] | None:
    """What ``client_pod`` printed once it succeeded; its logs in the assertion if it failed."""
    phase = cluster.kubectl("-n", namespace, "get", "pod", "dns-client", "-o", "jsonpath={.status.phase}").stdout
    logs = cluster.kubectl("-n", namespace, "logs", "dns-client", check=False).stdout
    assert phase != "Failed", f"client pod failed:\n{logs}"
    line = next((ln for ln in logs.splitlines() if ln.startswith("RESULT ")), None)
    result: dict[str, Any] | None = json.loads(line.removeprefix("RESULT ")) if phase == "Succeeded" and line else None
    return result


def post_predict(base_url: str) -> dict[str, Any]:
    req = urllib.request.Request(
        f"{base_url}/predict",
        data=json.dumps({"instances": [IRIS_ROW]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
        result: dict[str, Any] = json.loads(r.read())
        return result


def restarts(pods: list[dict[str, Any]]) -> dict[str, int]:
    """Each pod's container restarts, by pod name."""
    return {
        p["metadata"]["name"]: sum(s["restartCount"] for s in p["status"].get("containerStatuses") or []) for p in pods
    }


def idle_pod(namespace: str, name: str, image: str) -> dict[str, Any]:
    """A pod that only sleeps, to open connections from with ``connect_from`` (``image`` must have python3)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 0,
            "securityContext": RESTRICTED_POD,
            "containers": [
                {
                    "name": "idle",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["sleep", "infinity"],
                    "securityContext": RESTRICTED_CONTAINER,
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
                }
            ],
        },
    }


def connect_from(cluster: Cluster, namespace: str, pod: str, host: str, port: int) -> int:
    """Open a TCP connection from ``pod`` to host:port: 0 when it connects, else the errno (a refused or timed-out
    connection: 111 or 11)."""
    probe = f"import socket; s = socket.socket(); s.settimeout(3); print(s.connect_ex(({host!r}, {port})))"
    done = cluster.kubectl("-n", namespace, "exec", pod, "--", "python3", "-c", probe)
    return int(done.stdout.strip())
