"""A registry model pinned, pure and with the registry's lookups injected: the spec's registry fields, the pinned
variant as the pods and a rollout's revisions run it, the status it leaves, and when the registry is asked again.
The lookups against a real tracking server: ``test_mlflow_client.py``; the whole of it on a real API server:
``integration/test_mlflow_registry.py``."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest
from mlmodel_operator import config, kube, names, pins, registry, render, resolve, rollout, spec

SHA1, SHA2 = "1" * 64, "2" * 64
SCHEMA = '[{"type": "double", "name": "sepal length (cm)", "required": true}]'
TRACKING = "http://mlflow.tools:5000"


def body(uri: str = "models:/iris@champion", mlflow: Mapping[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    variant = {"name": "main", "modelUri": uri, **extra}
    return {
        "metadata": {"name": "iris", "namespace": "ml", "uid": "u", "generation": 1},
        "spec": {"variants": [variant], **({"mlflow": mlflow} if mlflow else {})},
    }


def pin(version: str = "7", sha: str = SHA1) -> registry.Pin:
    return registry.Pin(
        ref=registry.Ref(name="iris", alias="champion"),
        uri=f"{TRACKING}/api/2.0/mlflow-artifacts/artifacts/0/models/m-{version}/artifacts/model.skops",
        sha256=sha,
        version=version,
        run_id="run" + version,
        source=f"models:/m-{version}",
        sklearn_version="1.9.1",
        skops_trusted=("numpy.dtype",),
        input_schema=SCHEMA,
    )


def parse(raw: Mapping[str, Any]) -> spec.ModelDeployment:
    return spec.parse(raw, default_image="mlmodel-server:0.1.0")


def test_registry_uris_parse_and_wait_to_be_pinned() -> None:
    md = parse(body(mlflow={"trackingUri": TRACKING, "credentialsSecret": {"name": "token"}, "pollInterval": "1m"}))
    assert [v.ref for v in md.registered] == [registry.Ref(name="iris", alias="champion")]
    assert md.mlflow == spec.Mlflow(TRACKING, "token", 60.0)
    assert md.variants[0].downloaded and md.variants[0].pinned is None
    assert parse(body("runs:/abc/model")).registered[0].ref == registry.Ref(run_id="abc", path="model")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (body("models:/iris/latest"), "spec.variants[0].modelUri: 'models:/iris/latest': a version is a number"),
        (body(modelSha256=SHA1), "spec.variants[0].modelSha256: not for a registry modelUri"),
        (body(allowUnpinned=True), "spec.variants[0].allowUnpinned: not for a registry modelUri"),
        (body(mlflow={"trackingUri": "mlflow:5000"}), "spec.mlflow.trackingUri: an http:// or https:// URL"),
        (body(mlflow={"pollInterval": "soon"}), "spec.mlflow.pollInterval: a duration"),
    ],
)
def test_bad_registry_fields_name_the_field(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(spec.SpecError) as err:
        parse(raw)
    assert str(err.value).startswith(message), err.value


def test_a_pinned_variant_serves_the_file_by_its_digest_with_its_contract_and_credentials() -> None:
    raw = body(mlflow={"trackingUri": TRACKING, "credentialsSecret": {"name": "mlflow-creds"}})
    md = parse(pins.pinned_body(raw, {"main": pin()}, "mlflow-creds"))
    variant = md.variants[0]
    assert (variant.model_uri, variant.model_sha256, variant.ref) == (pin().uri, SHA1, None)
    assert variant.pinned == spec.Pinned("models:/iris@champion", "7", "run7", SCHEMA, ("numpy.dtype",), "mlflow-creds")
    env = {e["name"]: e for e in render.deployment(md, variant)["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env[names.ENV_MODEL_URI]["value"] == pin().uri and env[names.ENV_MODEL_SHA256]["value"] == SHA1
    assert env[names.ENV_INPUT_SCHEMA]["value"] == SCHEMA and env[names.ENV_SKOPS_TRUSTED]["value"] == "numpy.dtype"
    for name, key in names.ENV_MLFLOW_CREDENTIALS.items():  # the Secret's keys, never its values
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-creds", "key": key, "optional": True}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION"):  # an S3 store's
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-creds", "key": name, "optional": True}
    region = {"name": "mlflow-creds", "key": "AWS_REGION", "optional": True}  # as the AWS SDK for Python reads it
    assert env["AWS_DEFAULT_REGION"]["valueFrom"]["secretKeyRef"] == region
    assert names.ENV_ALLOW_UNPINNED not in env


def test_a_tensor_signature_is_no_input_contract() -> None:
    tensor = '[{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 4]}}]'
    item = pins.pinned_item(body()["spec"]["variants"][0], replace(pin(), input_schema=tensor), None)
    assert "inputSchema" not in item[spec.PINNED]


def test_a_rollout_revision_is_the_pin_so_a_moved_alias_is_a_new_revision() -> None:
    raw = body()
    md1 = parse(pins.pinned_body(raw, {"main": pin("7")}, None))
    again = parse(pins.pinned_body(raw, {"main": pin("7")}, None))
    md2 = parse(pins.pinned_body(raw, {"main": pin("8", SHA2)}, None))
    item1, item2 = (pins.pinned_body(raw, {"main": p}, None)["spec"]["variants"][0] for p in (pin("7"), pin("8", SHA2)))
    assert rollout.template(md1, item1) == rollout.template(again, item1) != rollout.template(md2, item2)
    # A revision recorded from it runs the same pin again, whatever the alias says by then.
    assert spec.variant_of(item1, "mlmodel-server:0.1.0") == md1.variants[0]


def test_the_status_records_the_pin_and_a_restart_reads_it_back() -> None:
    entry = pins.entry("main", "models:/iris@champion", pin())
    assert entry["resolved"] == "iris@champion → v7" and entry["sha256"] == SHA1 and "credentials" not in str(entry)
    assert pins.recorded({"models": [entry]}, "main", "models:/iris@champion") == pin()
    assert pins.recorded({"models": [entry]}, "main", "models:/iris/7") is None  # another URI: not its pin
    assert pins.summary([entry]) == "iris@champion → v7"
    assert pins.summary([entry, {**entry, "variant": "b"}]) == "main: iris@champion → v7, b: iris@champion → v7"


class Registry:
    """The lookups a pass makes, answered from ``answers`` (a Pin, or the RegistryError to raise)."""

    def __init__(self, *answers: registry.Pin | registry.RegistryError) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[registry.Ref, str, registry.Credentials | None]] = []

    def __call__(self, ref: registry.Ref, tracking: str, credentials: registry.Credentials | None) -> registry.Pin:
        self.asked.append((ref, tracking, credentials))
        answer = self.answers.pop(0)
        if isinstance(answer, registry.RegistryError):
            raise answer
        return answer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


SETTINGS = config.Registry(TRACKING, 30.0)


def test_the_registry_is_asked_once_per_poll_interval_however_many_passes() -> None:
    md, memory, clock = parse(body()), dict[str, Any](), Clock()
    lookups = Registry(pin("7"), pin("8", SHA2))
    first = resolve.pins_of(md, {}, memory, SETTINGS, lookups, clock)
    clock.now += 29
    second = resolve.pins_of(md, {}, memory, SETTINGS, lookups, clock)
    assert first.pins == second.pins == {"main": pin("7")} and len(lookups.asked) == 1
    assert first.wake == 30 and second.wake == pytest.approx(1)
    clock.now += 1
    third = resolve.pins_of(md, {}, memory, SETTINGS, lookups, clock)
    assert third.pins == {"main": pin("8", SHA2)} and len(lookups.asked) == 2
    assert lookups.asked[0][:2] == (registry.Ref(name="iris", alias="champion"), TRACKING)
    # The spec's own server and poll interval win over the operator's.
    own = parse(body(mlflow={"trackingUri": "https://other.example", "pollInterval": "5s"}))
    lookups = Registry(pin())
    assert (
        resolve.pins_of(own, {}, {}, SETTINGS, lookups, clock).wake == 5
        and lookups.asked[0][1] == "https://other.example"
    )


def test_a_failed_lookup_keeps_the_last_pin_and_reaches_the_conditions_with_the_registrys_words() -> None:
    md, memory, clock = parse(body()), dict[str, Any](), Clock()
    gone = registry.RegistryError(registry.MODEL_NOT_FOUND, "Registered model alias champion not found.")
    lookups = Registry(pin("7"), gone)
    resolve.pins_of(md, {}, memory, SETTINGS, lookups, clock)
    clock.now += 30
    failed = resolve.pins_of(md, {}, memory, SETTINGS, lookups, clock)
    assert failed.pins == {"main": pin("7")} and not failed.missing(md)
    message = "main: models:/iris@champion: Registered model alias champion not found."
    assert [(p.reason, p.message) for p in failed.problems] == [(registry.MODEL_NOT_FOUND, message)]
    # After a restart (nothing in memory), the pin the status recorded.
    status = {"models": failed.entries}
    restarted = resolve.pins_of(md, status, {}, SETTINGS, Registry(gone), clock)
    assert restarted.pins == {"main": pin("7")} and restarted.problems
    # Never resolved: nothing to serve.
    never = resolve.pins_of(md, {}, {}, SETTINGS, Registry(gone), clock)
    assert never.missing(md) == list(md.variants) and never.entries == []


@pytest.mark.parametrize(
    ("tracking", "reached"),
    [
        ("http://mlflow:5000", "http://mlflow.ml:5000"),  # a Service of the ModelDeployment's namespace
        ("https://mlflow/prefix", "https://mlflow.ml/prefix"),
        ("http://mlflow.tools:5000", "http://mlflow.tools:5000"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("http://localhost:5000", "http://localhost:5000"),
        ("http://[::1]:5000", "http://[::1]:5000"),
    ],
)
def test_a_services_bare_name_is_the_one_in_the_mds_namespace(tracking: str, reached: str) -> None:
    assert resolve.in_namespace(tracking, "ml") == reached
    lookups = Registry(pin())
    resolve.pins_of(parse(body(mlflow={"trackingUri": tracking})), {}, {}, SETTINGS, lookups, Clock())
    assert lookups.asked[0][1] == reached


def test_without_a_tracking_server_the_variant_waits_and_says_how_to_set_one() -> None:
    md = parse(body())
    lookups = Registry()
    result = resolve.pins_of(md, {}, {}, config.Registry(), lookups, Clock())
    assert not lookups.asked and result.missing(md)
    assert result.problems[0].reason == resolve.NOT_CONFIGURED
    assert "set spec.mlflow.trackingUri, or the chart's mlflow.trackingUri" in result.problems[0].message


def _data(**values: str) -> dict[str, Any]:
    return {"data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}}


S3 = {"AWS_ACCESS_KEY_ID": "minio-id", "AWS_SECRET_ACCESS_KEY": "minio-s3cret"}


def test_credentials_come_from_the_mds_own_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets: dict[tuple[str, str], dict[str, Any] | None] = {
        ("ml", "token"): _data(token="s3cret"),
        ("ml", "basic"): _data(username="u", password="p"),
        ("ml", "s3"): _data(**S3, AWS_ENDPOINT_URL="http://minio.storage:9000", AWS_REGION="eu-west-3"),
        ("ml", "token-s3"): _data(token="s3cret", **S3),
        ("ml", "empty"): {"data": {}},
        ("ml", "half"): _data(AWS_SECRET_ACCESS_KEY="minio-s3cret"),
    }
    monkeypatch.setattr(kube, "get", lambda _v, _k, namespace, name, **_: secrets.get((namespace, name)))
    keys = registry.S3Keys("minio-id", "minio-s3cret")
    for name, wanted in (
        ("token", registry.Credentials(token="s3cret")),
        ("basic", registry.Credentials(username="u", password="p")),
        ("s3", registry.Credentials(s3=replace(keys, endpoint_url="http://minio.storage:9000", region="eu-west-3"))),
        ("token-s3", registry.Credentials(token="s3cret", s3=keys)),
    ):
        lookups = Registry(pin())
        resolve.pins_of(parse(body(mlflow={"credentialsSecret": {"name": name}})), {}, {}, SETTINGS, lookups, Clock())
        assert lookups.asked[0][2] == wanted
    for name, words in (
        ("empty", "needs a token key, or username and password (the tracking server's), or an S3 store's "),
        ("empty", "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL for an S3-compatible store"),
        ("half", "has AWS_SECRET_ACCESS_KEY but no AWS_ACCESS_KEY_ID: an S3 store takes both"),
        ("missing", "does not exist"),
    ):
        result = resolve.pins_of(
            parse(body(mlflow={"credentialsSecret": {"name": name}})), {}, {}, SETTINGS, Registry(), Clock()
        )
        assert result.problems[0].reason == registry.CREDENTIALS and words in result.problems[0].message
        assert "s3cret" not in result.problems[0].message
