"""MLflow models as the real MLflow client saves them (skops, its default, and cloudpickle), their signature as the
input contract in every protocol; and the server under gunicorn downloading one, with credentials, from an HTTP
origin laid out as a tracking server's artifact proxy."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import yaml
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from mlmodel_server import errors, signature
from mlmodel_server.app import create_app
from mlmodel_server.config import Settings
from mlmodel_server.model import LoadedModel, load

from conftest import DEADLINE_S, Origin, typed_frame

# MLflow hints that integer columns cannot hold missing values: the typed model's are integer on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:Hint. Inferred schema contains integer column")

TREE = "sklearn.tree._tree.Tree"  # what skops does not trust by default in a forest, and MLflow asks to list
TOKEN = "t0k3n-from-a-secretKeyRef"
ARTIFACT = "/api/2.0/mlflow-artifacts/artifacts/0/models/m-0123456789abcdef/artifacts/"


@dataclass(frozen=True)
class Saved:
    """A model saved by ``mlflow.sklearn.save_model``, and the estimator saved."""

    directory: Path
    estimator: Any

    @property
    def mlmodel(self) -> dict[str, Any]:
        spec: dict[str, Any] = yaml.safe_load((self.directory / "MLmodel").read_text())
        return spec

    @property
    def file(self) -> Path:
        return self.directory / str(self.mlmodel["flavors"]["sklearn"]["pickled_model"])

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.file.read_bytes()).hexdigest()

    @property
    def inputs(self) -> str:
        """The signature's inputs, verbatim: what the operator passes as ``--input-schema``."""
        return str(self.mlmodel["signature"]["inputs"])


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Saved]:
    """logreg and forest (skops), pickled (cloudpickle), typed (every column type), tensor (a numpy signature)."""
    import mlflow.models
    import mlflow.sklearn

    out = tmp_path_factory.mktemp("mlflow")
    iris = load_iris(as_frame=True)
    frame, target = iris.data, iris.target
    typed = typed_frame(200, 3)
    estimators = {
        "logreg": LogisticRegression(max_iter=500).fit(frame, target),
        "forest": RandomForestClassifier(n_estimators=10, max_depth=3, random_state=0).fit(frame, target),
        "pickled": LogisticRegression(max_iter=500).fit(frame, target),
        "typed": LogisticRegression(max_iter=500).fit(typed, typed["length"] + typed["count"] > 6),
        "tensor": LogisticRegression(max_iter=500).fit(frame.to_numpy(), target),
    }
    options: dict[str, dict[str, Any]] = {
        "logreg": {},
        "forest": {"skops_trusted_types": [TREE]},
        "pickled": {"serialization_format": "cloudpickle"},
        "typed": {},
        "tensor": {},
    }
    examples = {"typed": typed, "tensor": frame.to_numpy()}
    for name, estimator in estimators.items():
        example = examples.get(name, frame)
        model_signature = mlflow.models.infer_signature(example)
        mlflow.sklearn.save_model(  # requirements given: MLflow infers them in a subprocess otherwise (seconds)
            estimator, out / name, signature=model_signature, pip_requirements=["scikit-learn"], **options[name]
        )
    return {name: Saved(out / name, estimator) for name, estimator in estimators.items()}


IRIS_ROWS = load_iris(as_frame=True).data.iloc[::15]


@pytest.mark.parametrize("name", ["logreg", "forest"])
def test_skops_is_what_mlflow_saves_and_the_server_loads(saved: dict[str, Saved], name: str) -> None:
    model = saved[name]
    assert model.file.suffix == ".skops" and model.mlmodel["flavors"]["sklearn"]["serialization_format"] == "skops"
    trusted = tuple(model.mlmodel["flavors"]["sklearn"]["skops_trusted_types"] or ())
    assert trusted == ((TREE,) if name == "forest" else ())
    if trusted:
        with pytest.raises(errors.ModelLoadError, match=rf"not trusted: {TREE}.*--skops-trusted"):
            load(model.directory, source="x", sha256=model.sha256)
    from_directory = load(model.directory, source="x", sha256=model.sha256, skops_trusted=trusted)
    inputs = signature.parse(model.inputs, "--input-schema")
    from_file = load(model.file, source="x", sha256=model.sha256, skops_trusted=trusted, inputs=inputs)
    expected = model.estimator.predict_proba(IRIS_ROWS)
    for loaded in (from_directory, from_file):
        loaded.verify()
        assert loaded.feature_names == tuple(IRIS_ROWS.columns) == loaded.fitted_names
        assert loaded.inputs is not None and loaded.inputs.columns == inputs.columns
        probabilities = loaded.predict(IRIS_ROWS.to_numpy(), want_proba=True).probabilities
        assert probabilities is not None and np.allclose(probabilities, expected)


def test_a_cloudpickle_mlflow_model_keeps_the_digest_rule(saved: dict[str, Saved]) -> None:
    model = saved["pickled"]
    assert model.file.name == "model.pkl"
    assert load(model.directory, source="x", sha256=model.sha256).inputs is not None
    with pytest.raises(errors.DigestMismatch, match=model.sha256):
        load(model.directory, source="x", sha256="0" * 64)


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda cols: cols[::-1], ["disagrees with the feature names", "orders them differently"]),
        (lambda cols: [*cols[:3], {**cols[3], "name": "petal"}], ["missing petal width (cm)", "not fitted with petal"]),
        (lambda cols: cols[:3], ["missing petal width (cm)"]),
    ],
    ids=["order", "renamed", "short"],
)
def test_a_schema_that_disagrees_with_the_model_is_refused(
    saved: dict[str, Saved], edit: Callable[[list[dict[str, Any]]], list[dict[str, Any]]], words: list[str]
) -> None:
    model = saved["logreg"]
    inputs = signature.parse(json.dumps(edit(json.loads(model.inputs))), "--input-schema")
    with pytest.raises(errors.InvalidInputSchema) as caught:
        load(model.file, source="models:/iris@champion", sha256=model.sha256, inputs=inputs)
    for word in ["--input-schema", "models:/iris@champion", *words]:
        assert word in caught.value.message


def test_a_model_without_feature_names_takes_the_schemas_but_not_another_width(saved: dict[str, Saved]) -> None:
    model, names = saved["tensor"], saved["logreg"].inputs
    assert "tensor" in model.inputs
    with pytest.raises(errors.InvalidInputSchema, match="tensor-based"):
        signature.parse(model.inputs, "--input-schema")
    named = load(model.file, source="x", sha256=None, inputs=signature.parse(names, "--input-schema"))
    assert named.fitted_names is None and named.feature_names == tuple(IRIS_ROWS.columns)
    three = json.dumps(json.loads(names)[:3])
    with pytest.raises(errors.InvalidInputSchema, match="has 3 columns, but x was fitted on 4 features"):
        load(model.file, source="x", sha256=None, inputs=signature.parse(three, "--input-schema"))


def test_a_directory_whose_signature_is_tensor_based_serves_without_a_contract(
    saved: dict[str, Saved], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        model = load(saved["tensor"].directory, source="x", sha256=None)
    assert model.inputs is None and model.n_features == 4
    assert "tensor-based" in next(r.fields["reason"] for r in caplog.records if hasattr(r, "fields"))


@pytest.fixture(scope="module")
def typed(saved: dict[str, Saved]) -> LoadedModel:
    model = saved["typed"]
    return load(model.file, source="x", sha256=model.sha256, inputs=signature.parse(model.inputs, "--input-schema"))


def _client(model: LoadedModel) -> Any:
    return create_app(Settings(model_uri="unused", model_name="typed"), model).test_client()


TYPED_ROWS = typed_frame(6, 3)


def _records() -> list[dict[str, Any]]:
    """The rows as JSON objects: booleans, whole numbers and floats, as each column holds them."""
    records: list[dict[str, Any]] = TYPED_ROWS.to_dict(orient="records")
    assert type(records[0]["flag"]) is bool and type(records[0]["count"]) is int
    return records


def test_the_contract_is_the_v2_metadata_and_model_info(typed: LoadedModel) -> None:
    client = _client(typed)
    inputs = client.get("/v2/models/typed").json["inputs"]
    assert inputs == [
        {"name": "length", "datatype": "FP64", "shape": [-1]},
        {"name": "count", "datatype": "INT64", "shape": [-1]},
        {"name": "small", "datatype": "INT32", "shape": [-1]},
        {"name": "flag", "datatype": "BOOL", "shape": [-1]},
        {"name": "ratio", "datatype": "FP32", "shape": [-1]},
    ]
    info = client.get("/model-info").json
    assert [c["type"] for c in info["inputs"]] == ["double", "long", "integer", "boolean", "float"]


def test_named_rows_and_columns_predict_as_the_estimator(saved: dict[str, Saved], typed: LoadedModel) -> None:
    client = _client(typed)
    expected = saved["typed"].estimator.predict(TYPED_ROWS).tolist()
    records = _records()
    assert client.post("/predict", json={"instances": records}).json["predictions"] == expected
    assert client.post("/v1/models/typed:predict", json={"instances": records}).json["predictions"] == expected
    positional = TYPED_ROWS.astype(float).to_numpy().tolist()
    assert client.post("/predict", json={"features": positional}).json["predictions"] == expected
    columns = [
        {
            "name": c["name"],
            "datatype": c["datatype"],
            "shape": [len(TYPED_ROWS)],
            "data": TYPED_ROWS[c["name"]].tolist(),
        }
        for c in client.get("/v2/models/typed").json["inputs"]
    ]
    outputs = client.post("/v2/models/typed/infer", json={"inputs": columns}).json["outputs"]
    assert outputs[0]["data"] == expected


@pytest.mark.parametrize(
    ("path", "change", "code", "words"),
    [
        ("/predict", {"count": None, "extra": 1}, "invalid_feature_names", ["unknown feature(s) extra"]),
        ("/predict", {"count": 1.5}, "wrong_type", ['"count"', "expected a whole number (long), got 1.5"]),
        ("/v1/models/typed:predict", {"length": True}, "wrong_type", ['"length"', "got a boolean"]),
        ("/v1/models/typed:predict", {"flag": "yes"}, "non_numeric_value", ['"flag"', "expected true or false"]),
        ("/predict", {"small": 2**40}, "wrong_type", ['"small"', "whole number (integer)"]),
    ],
)
def test_a_wrong_named_row_is_a_400_that_names_the_column(
    typed: LoadedModel, path: str, change: dict[str, Any], code: str, words: list[str]
) -> None:
    row = {k: v for k, v in {**_records()[0], **change}.items() if v is not None}
    answer = _client(typed).post(path, json={"instances": [row]})
    assert answer.status_code == 400
    body = answer.json
    message = body["error"]["message"] if path == "/predict" else body["error"]
    assert (body["error"]["code"] if path == "/predict" else body["code"]) == code
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    ("change", "code", "words"),
    [
        ({"drop": "count"}, "invalid_feature_names", ["missing count"]),
        ({"datatype": ("length", "BOOL")}, "wrong_type", ['input "length"', "BOOL", "double (FP64)"]),
        ({"data": ("count", [0.5] * 6)}, "wrong_type", ['"count"', "got 0.5"]),
    ],
)
def test_a_wrong_v2_column_is_a_400_that_names_it(
    typed: LoadedModel, change: dict[str, Any], code: str, words: list[str]
) -> None:
    columns = {
        c.name: {"name": c.name, "datatype": c.datatype, "shape": [6], "data": TYPED_ROWS[c.name].tolist()}
        for c in (typed.inputs.columns if typed.inputs else ())
    }
    if "drop" in change:
        del columns[change["drop"]]
    for key in ("datatype", "data"):
        if key in change:
            name, value = change[key]
            columns[name][key] = value
    answer = _client(typed).post("/v2/models/typed/infer", json={"inputs": list(columns.values())})
    assert answer.status_code == 400 and answer.json["code"] == code
    for word in words:
        assert word in answer.json["error"]


def test_the_server_downloads_a_registry_model_with_credentials(  # type: ignore[no-untyped-def]
    serve, origin: Origin, saved: dict[str, Saved], tmp_path: Path
) -> None:
    """As the operator starts it for ``models:/iris@champion``: the pinned file on the artifact proxy, its digest,
    the signature's inputs, the trusted types, and the tracking server's token in MLflow's variable."""
    model = saved["forest"]
    url = origin.url(ARTIFACT + model.file.name)
    origin.files[ARTIFACT + model.file.name] = model.file.read_bytes()
    origin.authorization = f"Bearer {TOKEN}"
    env = {"MLFLOW_TRACKING_TOKEN": TOKEN, "INPUT_SCHEMA": model.inputs, "SKOPS_TRUSTED": TREE}
    server = serve(
        "--model-uri", url, "--model-sha256", model.sha256, "--model-name", "iris", "--workers", "1", env=env
    )
    inputs = requests.get(server.url + "/v2/models/iris", timeout=10).json()["inputs"]
    assert [i["name"] for i in inputs] == list(IRIS_ROWS.columns) and {i["datatype"] for i in inputs} == {"FP64"}
    records = IRIS_ROWS.to_dict(orient="records")
    answer = requests.post(server.url + "/predict", json={"instances": records}, timeout=10).json()
    assert answer["predictions"] == model.estimator.predict(IRIS_ROWS).tolist()
    assert set(origin.seen) == {f"Bearer {TOKEN}"}
    assert TOKEN not in server.logs()


def test_refused_credentials_stop_the_server_at_once(  # type: ignore[no-untyped-def]
    serve, origin: Origin, saved: dict[str, Saved], tmp_path: Path
) -> None:
    model = saved["logreg"]
    origin.files[ARTIFACT + model.file.name] = model.file.read_bytes()
    origin.authorization = f"Bearer {TOKEN}"
    termination = tmp_path / "termination-log"
    termination.touch()
    env = {"MLFLOW_TRACKING_TOKEN": "wr0ng-t0ken", "TERMINATION_LOG": str(termination)}
    url = origin.url(ARTIFACT + model.file.name)
    server = serve("--model-uri", url, "--model-sha256", model.sha256, env=env, ready=False)
    assert server.proc.wait(DEADLINE_S) == 2
    assert termination.read_text().startswith(f"credentials_refused: {url} refused the credentials (HTTP 401)")
    assert origin.hits <= 1 and "wr0ng-t0ken" not in server.logs()


def test_a_tensor_based_input_schema_stops_the_server_before_it_downloads(  # type: ignore[no-untyped-def]
    serve, origin: Origin, saved: dict[str, Saved], tmp_path: Path
) -> None:
    model = saved["tensor"]
    termination = tmp_path / "termination-log"
    termination.touch()
    env = {"INPUT_SCHEMA": model.inputs, "TERMINATION_LOG": str(termination)}
    url = origin.url(ARTIFACT + model.file.name)
    server = serve("--model-uri", url, "--model-sha256", model.sha256, env=env, ready=False)
    assert server.proc.wait(DEADLINE_S) == 2
    assert termination.read_text().startswith("invalid_input_schema: --input-schema (INPUT_SCHEMA) is tensor-based")
    assert origin.seen == []
