"""Bad input from outside (issue 11): ModelDeployments that break the CRD are refused by the API
server, each naming its field, none is stored, and the operator watching the namespace carries on."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import badspec
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from mlmodel_operator import names

from conftest import InProcess, Kubectl, eventually

SAMPLES = Path(__file__).resolve().parent / "samples"
GENERATED = 200
SLOW = list(HealthCheck)  # each example is a round trip to the API server


def create(api: client.CustomObjectsApi, namespace: str, body: dict[str, Any]) -> tuple[int, str]:
    """POST a ModelDeployment with strict field validation: the status and the API server's message."""
    try:
        api.create_namespaced_custom_object(
            names.GROUP, names.VERSION, namespace, names.PLURAL, body, field_validation="Strict"
        )
    except ApiException as err:
        return int(err.status), str(json.loads(err.body).get("message", err.body))
    return 201, "created"


def big_spec(namespace: str) -> dict[str, Any]:
    """A 300 KB spec: ten env values of 30 KB, each within its own limit."""
    body = badspec.base("big", namespace)
    body["spec"]["variants"][0]["env"] = [{"name": f"BLOB_{k}", "value": "x" * 30_000} for k in range(10)]
    return body


def children(kubectl: Kubectl, namespace: str, kind: str) -> set[str]:
    items = kubectl.read(kind, namespace=namespace, selector=f"{names.LABEL_MANAGED_BY}={names.FIELD_MANAGER}")
    return {i["metadata"]["name"] for i in items["items"]}


# The operator's thread draws its resync jitter from `random` while hypothesis draws a case.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
def test_malformed_modeldeployments_are_refused_naming_the_field_and_the_operator_carries_on(
    kubectl: Kubectl, namespace: str, operator: Callable[[], InProcess]
) -> None:
    """200 ModelDeployments generated from the CRD's schema, each breaking one constraint, the
    hand-made invalid samples (weights summing to 99 or 101, 11 variants, bad URIs, digests and
    quantities, reserved env names...) and a 300 KB spec: each is refused with a message naming
    its field, none is stored, and the operator, watching all along, makes a valid one's children
    after and is still running."""
    runner = operator()
    api = client.CustomObjectsApi(config.new_client_from_config(os.environ["KUBECONFIG"]))
    refused: Counter[str] = Counter()
    fields: set[str] = set()

    @settings(max_examples=GENERATED, database=None, derandomize=True, deadline=None, suppress_health_check=SLOW)
    @given(badspec.cases(namespace))
    def generated(case: badspec.Case) -> None:
        code, message = create(api, namespace, case.body)
        assert code in (400, 422), f"{case.what} at {case.field}: {code} {message}\n{json.dumps(case.body)[:2000]}"
        assert case.field in message, f"{case.what}: {case.field!r} is not named in {message!r}"
        refused[case.what] += 1
        fields.add(case.field)

    generated()
    expected: dict[str, list[str]] = yaml.safe_load((SAMPLES / "invalid.yaml").read_text())
    for sample, fragments in sorted(expected.items()):
        body = yaml.safe_load((SAMPLES / "invalid" / f"{sample}.yaml").read_text())
        body["metadata"]["namespace"] = namespace
        code, message = create(api, namespace, body)
        assert code in (400, 422) and all(f in message for f in fragments), (sample, code, message)
        refused["sample"] += 1
    code, message = create(api, namespace, big_spec(namespace))
    assert code == 422 and "spec.variants: Invalid value" in message and "128 KiB" in message, message[:500]
    print(f"\nrefused, each naming its field: {dict(refused)} ({len(fields)} fields) and a 300 KB spec")
    assert sum(refused.values()) - refused["sample"] >= GENERATED and refused["sample"] == len(expected)
    assert not kubectl.read("modeldeployments", namespace=namespace)["items"]

    kubectl.apply(badspec.base("iris", namespace))
    routed = {"iris-stable", "iris-canary", "iris-router"}
    eventually(lambda: children(kubectl, namespace, "deployments") == routed, "a valid one's deployments")
    eventually(lambda: children(kubectl, namespace, "services") == {"iris", "iris-stable", "iris-canary"}, "services")
    assert not runner.future.done(), "the operator exited"
