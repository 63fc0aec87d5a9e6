"""MLServer's request codecs and pydantic types against the real server under gunicorn.

MLServer's pins clash with kserve's, so this runs in a venv of its own: ``make test-mlserver``
(part of ``make test-unit``); the main venv's run leaves this file out.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
import requests
from mlserver import codecs, types
from sklearn.linear_model import LogisticRegression

from conftest import IRIS_FEATURES, SavedModel, Server, start, stop, typed_frame, wait_ready

ROWS = np.random.RandomState(11).uniform(0, 8, size=(20, 4))
# An input schema as MLflow writes a signature's inputs for a frame of these column types.
TYPES = {"length": "double", "count": "long", "small": "integer", "flag": "boolean", "ratio": "float"}
SCHEMA = json.dumps([{"type": kind, "name": name, "required": True} for name, kind in TYPES.items()])


@pytest.fixture(scope="module")
def typed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """A model fitted on a frame of every column type the input schema takes, and its file."""
    frame = typed_frame(200, 0)
    estimator = LogisticRegression(max_iter=500).fit(frame, frame["length"] + frame["count"] > 6)
    path = tmp_path_factory.mktemp("typed") / "typed.joblib"
    joblib.dump(estimator, path)
    return estimator, path


@pytest.fixture(scope="module")
def servers(
    models: dict[str, SavedModel], typed: tuple[Any, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Server]]:
    running: dict[str, Server] = {}
    try:
        for name in ("iris", "hgb"):
            path = tmp_path_factory.mktemp(name)
            running[name] = start(path, "--model-uri", str(models[name].path), "--model-name", name, "--workers", "1")
        args = ("--model-uri", str(typed[1]), "--model-name", "typed", "--workers", "1", "--input-schema", SCHEMA)
        running["typed"] = start(tmp_path_factory.mktemp("typed-server"), *args)
        for server in running.values():
            wait_ready(server)
        yield running
    finally:
        for server in running.values():
            stop(server)


def _infer(server: Server, model: str, request: Any) -> requests.Response:
    body = request.model_dump_json()
    headers = {"Content-Type": "application/json"}
    return requests.post(f"{server.url}/v2/models/{model}/infer", data=body, headers=headers, timeout=10)


def test_numpy_request_codec(servers: dict[str, Server], models: dict[str, SavedModel]) -> None:
    iris = models["iris"].estimator
    reply = _infer(servers["iris"], "iris", codecs.NumpyRequestCodec.encode_request(ROWS))
    response = types.InferenceResponse.model_validate_json(reply.content)
    assert [o.name for o in response.outputs] == ["predict", "predict_proba"]
    assert codecs.NumpyCodec.decode_output(response.outputs[0]).tolist() == iris.predict(ROWS).tolist()
    np.testing.assert_allclose(codecs.NumpyCodec.decode_output(response.outputs[1]), iris.predict_proba(ROWS))

    request = codecs.NumpyRequestCodec.encode_request(ROWS)
    request.outputs = [types.RequestOutput(name="predict")]
    one = types.InferenceResponse.model_validate_json(_infer(servers["iris"], "iris", request).content)
    assert codecs.NumpyRequestCodec.decode_response(one).tolist() == iris.predict(ROWS).tolist()


def test_pandas_codec_one_input_per_feature(servers: dict[str, Server], models: dict[str, SavedModel]) -> None:

    frame = pd.DataFrame(ROWS, columns=IRIS_FEATURES)
    request = codecs.PandasCodec.encode_request(frame)
    request.outputs = [types.RequestOutput(name="predict")]
    response = types.InferenceResponse.model_validate_json(_infer(servers["iris"], "iris", request).content)
    decoded = codecs.PandasCodec.decode_response(response)
    assert decoded["predict"].tolist() == models["iris"].estimator.predict(ROWS).tolist()


def test_missing_values_reach_a_model_that_takes_them(
    servers: dict[str, Server], models: dict[str, SavedModel]
) -> None:
    x = np.random.RandomState(12).normal(size=(5, 6))
    x[1, 2] = np.nan
    reply = _infer(servers["hgb"], "hgb", codecs.NumpyRequestCodec.encode_request(x))
    response = types.InferenceResponse.model_validate_json(reply.content)
    assert codecs.NumpyCodec.decode_output(response.outputs[0]).tolist() == models["hgb"].estimator.predict(x).tolist()


def test_metadata_and_error_types(servers: dict[str, Server]) -> None:
    url = servers["iris"].url
    model = types.MetadataModelResponse.model_validate_json(requests.get(f"{url}/v2/models/iris", timeout=10).content)
    assert model.name == "iris" and [o.name for o in model.outputs] == ["predict", "predict_proba"]
    server = types.MetadataServerResponse.model_validate_json(requests.get(f"{url}/v2", timeout=10).content)
    assert server.extensions == ["binary_tensor_data"]
    reply = _infer(servers["iris"], "iris", codecs.NumpyRequestCodec.encode_request(ROWS[:, :3]))
    assert reply.status_code == 400
    error = types.InferenceErrorResponse.model_validate_json(reply.content)
    assert error.error == "row 0: expected 4 features, got 3"


def test_pandas_codec_columns_of_every_type_meet_the_input_schema(
    servers: dict[str, Server], typed: tuple[Any, Path]
) -> None:
    """MLServer's pandas codec sends each column with its own datatype (FP64, INT64, INT32, BOOL, FP32): the
    types the input schema asks for, as the metadata lists them."""
    url = servers["typed"].url
    metadata = types.MetadataModelResponse.model_validate_json(
        requests.get(f"{url}/v2/models/typed", timeout=10).content
    )
    assert [(i.name, i.datatype) for i in metadata.inputs or []] == [
        ("length", "FP64"),
        ("count", "INT64"),
        ("small", "INT32"),
        ("flag", "BOOL"),
        ("ratio", "FP32"),
    ]
    frame = typed_frame(12, 1)
    request = codecs.PandasCodec.encode_request(frame)
    request.outputs = [types.RequestOutput(name="predict")]
    response = types.InferenceResponse.model_validate_json(_infer(servers["typed"], "typed", request).content)
    assert codecs.PandasCodec.decode_response(response)["predict"].tolist() == typed[0].predict(frame).tolist()

    wrong = codecs.PandasCodec.encode_request(frame.assign(count=frame["count"] + 0.5))
    error = types.InferenceErrorResponse.model_validate_json(_infer(servers["typed"], "typed", wrong).content)
    assert error.error == 'row 0, feature 1 ("count"): expected a whole number (long), got ' + str(
        frame["count"][0] + 0.5
    )
