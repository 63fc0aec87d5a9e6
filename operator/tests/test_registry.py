"""A registry's model URIs and answers, pure (``registry``): the URIs refused and accepted, artifact locations as
URLs, the sklearn flavor of an ``MLmodel`` file, and what an error answer means."""

from __future__ import annotations

import base64
import json

import pytest
from mlmodel_operator import registry
from mlmodel_operator.registry import Credentials, Flavor, Pin, Ref, RegistryError, S3Keys

INPUTS = '[{"type": "double", "name": "sepal length (cm)", "required": true}]'
# As mlflow.sklearn.log_model (3.17.2) writes it, but for the signature's other columns.
MLMODEL = f"""
artifact_path: mlflow-artifacts:/0/models/m-7596/artifacts
flavors:
  python_function:
    loader_module: mlflow.sklearn
    model_path: model.skops
  sklearn:
    code: null
    pickled_model: model.skops
    serialization_format: skops
    sklearn_version: 1.9.1
    skops_trusted_types: null
model_id: m-7596
signature:
  inputs: '{INPUTS}'
  outputs: '[{{"type": "long", "required": true}}]'
"""


@pytest.mark.parametrize(
    ("uri", "ref"),
    [
        ("models:/iris/3", Ref(name="iris", version=3)),
        ("models:/iris@champion", Ref(name="iris", alias="champion")),
        ("models:/Fraud model v2.1-rc/12", Ref(name="Fraud model v2.1-rc", version=12)),
        ("models:/team@iris@prod_2", Ref(name="team@iris", alias="prod_2")),  # MLflow splits at the last @
        ("MODELS:/iris/007", Ref(name="iris", version=7)),
        ("runs:/3f2a9c1d0b/model", Ref(run_id="3f2a9c1d0b", path="model")),
        ("runs:/3f2a9c1d0b/sub dir/model/", Ref(run_id="3f2a9c1d0b", path="sub dir/model")),
    ],
)
def test_a_registry_uri_names_a_version_an_alias_or_a_run_s_model(uri: str, ref: Ref) -> None:
    assert registry.parse(uri) == ref
    assert registry.parse(str(ref)) == ref


@pytest.mark.parametrize(
    "uri", ["https://store/iris.joblib", "s3://bucket/iris.joblib", "pvc://claim/iris.joblib", "file:///m", "/m", "m"]
)
def test_other_uris_are_no_registry_uris(uri: str) -> None:
    assert registry.parse(uri) is None


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("models:/iris", "then /<version> or @<alias>"),
        ("models:/m-75968d57235d4578", "then /<version> or @<alias>"),  # a logged model's ID: no registry version
        ("models:/iris/latest", "use an alias"),
        ("models:/iris/Production", "use an alias"),
        ("models:/iris/0", "a number from 1"),
        ("models:/iris/-1", "a number from 1"),
        ("models:/iris/1/2", "then /<version> or @<alias>"),
        ("models:/iris@", "then /<version> or @<alias>"),
        ("models:/@champion", "then /<version> or @<alias>"),
        ("models:/ /1", "then /<version> or @<alias>"),
        ("models:/iris@two words", "then /<version> or @<alias>"),
        ("models:/iris/1@champion", "a number from 1"),
        ("models:iris/1", "right after :/"),
        ("models://workspace/iris/1", "right after :/"),
        ("models:/", "then /<version> or @<alias>"),
        ("runs:/", "a run's ID"),
        ("runs:/3f2a9c1d0b", "a run's ID"),
        ("runs:/3f2a9c1d0b/", "a run's ID"),
        ("runs:/3f2a9c1d0b/../other/model", "a run's ID"),
        ("runs:/3f2a9c1d0b//model", "a run's ID"),
        ("runs:/-3f2a/model", "a run's ID"),
    ],
)
def test_a_malformed_registry_uri_is_refused_with_the_shapes_accepted(uri: str, why: str) -> None:
    with pytest.raises(ValueError) as refused:
        registry.parse(uri)
    assert str(refused.value).startswith(f"{uri!r}: ")
    assert why in str(refused.value)
    assert str(refused.value).endswith(
        "; a registry modelUri is models:/<name>/<version>, models:/<name>@<alias> or runs:/<run_id>/<artifact path>"
    )


def _pin(uri: str, version: str | None) -> Pin:
    ref = registry.parse(uri)
    assert ref is not None
    return Pin(ref, "http://t/f", "0" * 64, version, "3f2a9c1d0b7e", "models:/m-1", "1.9.1")


def test_a_pin_describes_what_was_resolved_to_what() -> None:
    assert _pin("models:/iris@champion", "7").describe() == "iris@champion → v7"
    assert _pin("models:/iris/3", "3").describe() == "iris/3 → v3"
    assert _pin("runs:/3f2a9c1d0b7e/model", None).describe() == "runs:/3f2a9c1d…/model"
    assert _pin("runs:/3f2a/model", None).describe() == "runs:/3f2a/model"


@pytest.mark.parametrize(
    ("tracking", "artifacts", "file", "url"),
    [
        (
            "http://mlflow:5000",
            "mlflow-artifacts:/0/models/m-1/artifacts",
            "MLmodel",
            "http://mlflow:5000/api/2.0/mlflow-artifacts/artifacts/0/models/m-1/artifacts/MLmodel",
        ),
        (  # a tracking server under a path prefix, and a file name to quote
            "https://tools/mlflow/",
            "mlflow-artifacts:/1/3f2a/artifacts/model/",
            "my model.pkl",
            "https://tools/mlflow/api/2.0/mlflow-artifacts/artifacts/1/3f2a/artifacts/model/my%20model.pkl",
        ),
        (  # another server's proxy, reached as the tracking server is
            "https://mlflow",
            "mlflow-artifacts://artifacts.internal:5001/0/m",
            "model.skops",
            "https://artifacts.internal:5001/api/2.0/mlflow-artifacts/artifacts/0/m/model.skops",
        ),
        (
            "http://mlflow",
            "s3://bucket/0/3f2a/artifacts/model",
            "model.pkl",
            "s3://bucket/0/3f2a/artifacts/model/model.pkl",
        ),
        ("http://mlflow", "https://store/models/", "model.pkl", "https://store/models/model.pkl"),
    ],
)
def test_artifacts_are_read_through_the_tracking_server_s_proxy_or_their_store(
    tracking: str, artifacts: str, file: str, url: str
) -> None:
    assert registry.artifact_url(tracking, artifacts, file) == url


@pytest.mark.parametrize(
    ("served", "artifacts", "file", "url"),
    [
        (
            registry.served_version("my iris", "3"),
            "/mnt/artifacts/1/models/m-1/artifacts",
            "model.skops",
            "https://tools/mlflow/model-versions/get-artifact?name=my+iris&version=3&path=model.skops#model.skops",
        ),
        (
            registry.served_logged_model("m-1", "sub"),
            "file:///mnt/artifacts/1/models/m-1/artifacts/sub",
            "model.pkl",
            "https://tools/mlflow/ajax-api/2.0/mlflow/logged-models/m-1/artifacts/files"
            "?artifact_file_path=sub%2Fmodel.pkl#model.pkl",
        ),
        (
            registry.served_run("3f2a", "legacy/model"),
            "/mnt/artifacts/1/3f2a/artifacts/legacy/model",
            "MLmodel",
            "https://tools/mlflow/get-artifact?run_id=3f2a&path=legacy%2Fmodel%2FMLmodel#MLmodel",
        ),
    ],
)
def test_artifacts_on_a_path_only_the_tracking_server_reads_come_through_its_own_routes_named_by_their_fragment(
    served: registry.Served, artifacts: str, file: str, url: str
) -> None:
    assert registry.artifact_url("https://tools/mlflow/", artifacts, file, served) == url
    # A store the cluster reads itself is read there, not through the tracking server.
    assert registry.artifact_url("https://tools/mlflow", "s3://b/m", file, served) == f"s3://b/m/{file}"


@pytest.mark.parametrize("artifacts", ["file:///mlruns/0/3f2a/artifacts/model", "/mlruns/0/m", "gs://b/m", "dbfs:/m"])
def test_artifacts_the_cluster_cannot_read_are_refused(artifacts: str) -> None:
    with pytest.raises(RegistryError) as refused:
        registry.artifact_url("http://mlflow", artifacts, "MLmodel")
    assert refused.value.reason == registry.UNSUPPORTED_STORE == "UnsupportedArtifactStore"
    assert artifacts in refused.value.message
    assert all(
        word in refused.value.message for word in ("--serve-artifacts", "a path it reads", "s3://", "http(s)://")
    )


def test_the_sklearn_flavor_names_the_model_file_and_what_the_server_needs_to_load_it() -> None:
    assert registry.flavor(MLMODEL) == Flavor("model.skops", "skops", "1.9.1", (), INPUTS)
    assert json.loads(str(registry.flavor(MLMODEL).input_schema))[0]["name"] == "sepal length (cm)"
    trusted = MLMODEL.replace(
        "skops_trusted_types: null", "skops_trusted_types: [numpy.dtype, sklearn.tree._tree.Tree]"
    )
    assert registry.flavor(trusted).skops_trusted == ("numpy.dtype", "sklearn.tree._tree.Tree")
    # Older MLflow wrote no serialization format, meaning pickle; and a model may have no signature.
    old = "flavors:\n  sklearn:\n    pickled_model: model.pkl\n    sklearn_version: 1.3.0\n"
    assert registry.flavor(old) == Flavor("model.pkl", "pickle", "1.3.0", (), None)


@pytest.mark.parametrize(
    ("mlmodel", "has"),
    [
        (
            "flavors:\n  python_function: {loader_module: mlflow.pyfunc.model}\n  xgboost: {}\n",
            "python_function, xgboost",
        ),
        ("flavors:\n  sklearn: {pickled_model: m.joblib, serialization_format: joblib}\n", "sklearn (joblib)"),
        ("flavors: {}\n", "none"),
    ],
)
def test_a_model_without_an_sklearn_flavor_we_load_is_refused_naming_its_flavors(mlmodel: str, has: str) -> None:
    with pytest.raises(RegistryError) as refused:
        registry.flavor(mlmodel)
    assert refused.value.reason == "UnsupportedFlavor"
    assert refused.value.message == (
        f"we serve the sklearn flavor (pickle, cloudpickle or skops); this model has: {has}"
    )


@pytest.mark.parametrize(
    "mlmodel", ["{not yaml", "just text", "flavors: [sklearn]", "flavors:\n  sklearn: {pickled_model: ../../m.pkl}\n"]
)
def test_an_mlmodel_file_that_is_no_mlflow_model_s_is_an_error(mlmodel: str) -> None:
    with pytest.raises(RegistryError) as refused:
        registry.flavor(mlmodel)
    assert refused.value.reason == registry.REGISTRY_ERROR == "RegistryError"


def test_credentials_sign_requests_with_a_bearer_token_or_http_basic() -> None:
    assert registry.headers(None) == {}
    assert registry.headers(Credentials(token="t0k3n")) == {"Authorization": "Bearer t0k3n"}
    basic = registry.headers(Credentials(username="ana", password="pa:ss wörd"))["Authorization"]
    assert basic.startswith("Basic ")
    assert base64.b64decode(basic.removeprefix("Basic ")).decode() == "ana:pa:ss wörd"
    assert "wörd" not in repr(Credentials(username="ana", password="pa:ss wörd"))


def test_s3_keys_alone_sign_no_request_to_the_tracking_server_and_are_never_shown() -> None:
    keys = S3Keys("AKIAEXAMPLEID", "s3cret/KEY", "http://minio:9000")
    assert registry.headers(Credentials(s3=keys)) == {}
    assert registry.headers(Credentials(token="t0k3n", s3=keys)) == {"Authorization": "Bearer t0k3n"}
    assert "AKIAEXAMPLEID" not in repr(Credentials(s3=keys)) and "s3cret" not in repr(Credentials(s3=keys))
    assert "minio" in repr(keys)  # where the store is, which is no secret


def test_s3_keys_are_read_by_the_aws_sdk_s_names() -> None:
    pair = {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret"}
    assert registry.s3_keys({"token": "t"}, "Secret s") is None
    aws = registry.s3_keys(pair, "Secret s")
    assert aws == S3Keys("id", "secret", None, "us-east-1")
    assert aws is not None and aws.endpoint == "https://s3.us-east-1.amazonaws.com"
    regional = registry.s3_keys({**pair, "AWS_REGION": "eu-west-3"}, "Secret s")
    assert regional is not None and regional.endpoint == "https://s3.eu-west-3.amazonaws.com"
    minio = registry.s3_keys({**pair, "AWS_ENDPOINT_URL": "http://minio.storage:9000/"}, "Secret s")
    assert minio == S3Keys("id", "secret", "http://minio.storage:9000", "us-east-1")
    assert minio.endpoint == "http://minio.storage:9000"


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"AWS_ACCESS_KEY_ID": "id"}, "Secret s has AWS_ACCESS_KEY_ID but no AWS_SECRET_ACCESS_KEY"),
        ({"AWS_SECRET_ACCESS_KEY": "s3cret"}, "Secret s has AWS_SECRET_ACCESS_KEY but no AWS_ACCESS_KEY_ID"),
        (
            {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "s3cret", "AWS_ENDPOINT_URL": "minio:9000"},
            "Secret s: AWS_ENDPOINT_URL is the S3 store's http:// or https:// URL",
        ),
        (
            {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "s3cret", "AWS_ENDPOINT_URL": "http://u:s3cret@m"},
            "Secret s: AWS_ENDPOINT_URL is the S3 store's http:// or https:// URL",
        ),
    ],
)
def test_s3_keys_that_cannot_sign_are_unavailable_without_being_shown(values: dict[str, str], words: str) -> None:
    with pytest.raises(RegistryError) as refused:
        registry.s3_keys(values, "Secret s")
    assert refused.value.reason == registry.CREDENTIALS == "CredentialsUnavailable"
    assert refused.value.message.startswith(words) and "s3cret" not in str(refused.value)


def test_a_tracking_uri_is_an_http_url_without_credentials() -> None:
    assert registry.tracking("http://mlflow.mlflow:5000/") == "http://mlflow.mlflow:5000"
    assert registry.tracking("https://tools/mlflow/") == "https://tools/mlflow"
    for uri in ("http://ana:s3cret@mlflow:5000", "ftp://mlflow", "mlflow:5000", "http://"):
        with pytest.raises(RegistryError) as refused:
            registry.tracking(uri)
        assert refused.value.reason == "RegistryError"
        assert "s3cret" not in str(refused.value)


ALIAS = "http://mlflow/api/2.0/mlflow/registered-models/alias?name=iris&alias=nope"


def _error(code: str, message: str) -> bytes:
    return json.dumps({"error_code": code, "message": message}).encode()


@pytest.mark.parametrize(
    ("status", "body", "reason", "message"),
    [
        (
            400,
            _error("INVALID_PARAMETER_VALUE", "Registered model alias nope not found."),
            "ModelNotFound",
            "Registered model alias nope not found.",
        ),
        (
            404,
            _error("RESOURCE_DOES_NOT_EXIST", "Registered Model with name=iris not found"),
            "ModelNotFound",
            "Registered Model with name=iris not found",
        ),
        (
            400,
            _error("INVALID_PARAMETER_VALUE", "Parameter 'version' must be an integer, got 'x'."),
            "RegistryError",
            "Parameter 'version' must be an integer, got 'x'.",
        ),
        (
            401,
            b"You are not authenticated. Please see https://www.mlflow.org/docs/latest/auth/index.html on how to",
            "RegistryUnauthorized",
            "HTTP 401 from http://mlflow/api/2.0/mlflow/registered-models/alias: You are not authenticated. Please see"
            " https://www.mlflow.org/docs/latest/auth/index.html on how to",
        ),
        (
            403,
            b"Permission denied\n",
            "RegistryUnauthorized",
            "HTTP 403 from http://mlflow/api/2.0/mlflow/registered-models/alias: Permission denied",
        ),
        (  # no MLflow API at that path: not a JSON answer, and no HTML in the message
            404,
            b"<!doctype html>\n<title>404 Not Found</title>",
            "ModelNotFound",
            "HTTP 404 from http://mlflow/api/2.0/mlflow/registered-models/alias",
        ),
        (500, b"", "RegistryError", "HTTP 500 from http://mlflow/api/2.0/mlflow/registered-models/alias"),
    ],
)
def test_an_error_answer_is_told_in_the_registry_s_own_words(
    status: int, body: bytes, reason: str, message: str
) -> None:
    refused = registry.refusal(status, body, ALIAS)
    assert (refused.reason, refused.message) == (reason, message)


OBJECT = "s3://models/0/models/m-1/artifacts/model.skops"
# As AWS answers a request signed with a wrong secret: the access key and what was signed come back, never shown.
SIGNATURE_DOES_NOT_MATCH = b"""<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match the signature
 you provided. Check your key and signing method.</Message><AWSAccessKeyId>AKIAEXAMPLEID</AWSAccessKeyId>
<StringToSign>AWS4-HMAC-SHA256 20260101T000000Z</StringToSign><SignatureProvided>0f1e</SignatureProvided>
<RequestId>R</RequestId></Error>"""


@pytest.mark.parametrize(
    ("status", "body", "reason", "message"),
    [
        (
            404,
            b"<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message>"
            b"<Key>0/models/m-1/artifacts/model.skops</Key></Error>",
            "ModelNotFound",
            f"HTTP 404 from {OBJECT}: NoSuchKey: The specified key does not exist.",
        ),
        (
            403,
            SIGNATURE_DOES_NOT_MATCH,
            "RegistryUnauthorized",
            f"HTTP 403 from {OBJECT}: SignatureDoesNotMatch: The request signature we calculated does not match the "
            "signature you provided. Check your key and signing method.",
        ),
        (
            400,
            b"<Error><Code>AuthorizationHeaderMalformed</Code><Message>the region &apos;us-east-1&apos; is wrong; "
            b"expecting &apos;eu-west-3&apos;</Message></Error>",
            "RegistryError",
            f"HTTP 400 from {OBJECT}: AuthorizationHeaderMalformed: the region 'us-east-1' is wrong; expecting "
            "'eu-west-3'",
        ),
        (403, b"", "RegistryUnauthorized", f"HTTP 403 from {OBJECT}"),
    ],
)
def test_an_s3_store_s_error_is_told_by_its_code_and_message_alone(
    status: int, body: bytes, reason: str, message: str
) -> None:
    refused = registry.refusal(status, body, OBJECT)
    assert (refused.reason, refused.message) == (reason, message)
    assert "AKIAEXAMPLEID" not in refused.message and "AWS4-HMAC" not in refused.message


def test_a_version_serves_once_it_is_ready() -> None:
    found = {"name": "iris", "version": "3", "source": "models:/m-1", "run_id": "", "status": "READY"}
    assert registry.version({"model_version": found}) == registry.Version("3", "models:/m-1", None)
    for status, words, said in [
        ("PENDING_REGISTRATION", {}, ""),
        ("FAILED_REGISTRATION", {"status_message": "no"}, ": no"),
    ]:
        with pytest.raises(RegistryError) as refused:
            registry.version({"model_version": {**found, "status": status, **words}})
        assert (refused.value.reason, refused.value.message) == (
            "RegistryError",
            f"version 3 of iris is {status}, not READY{said}",
        )
