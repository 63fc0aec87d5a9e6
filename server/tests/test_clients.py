"""Contract tests: the real Triton and KServe Python clients, default settings, against the real server.

The server runs under gunicorn (``python -m mlmodel_server``), serving the iris forest: conftest's ``iris_server``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput
from tritonclient.utils import InferenceServerException

from conftest import IRIS_ROWS, SavedModel, Server

ROWS = np.random.RandomState(7).uniform(0, 8, size=(40, 4))
SHORT_ROW_MESSAGE = "row 0: expected 4 features, got 3"
CASES = [
    pytest.param(datatype, rows, binary, id=f"{datatype}-{rows}x4-{'binary' if binary else 'json'}")
    for datatype in ("FP32", "FP64")
    for rows in (1, len(ROWS))
    for binary in (True, False)
]


def _rows(datatype: str, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows as the client sends them, and as float64 (what the server predicts on)."""
    x = ROWS[:rows].astype(np.float32 if datatype == "FP32" else np.float64)
    return x, x.astype(np.float64)


def _check(iris: SavedModel, x: np.ndarray, predict: np.ndarray, proba: np.ndarray) -> None:
    assert predict.tolist() == iris.estimator.predict(x).tolist()
    np.testing.assert_allclose(proba, iris.estimator.predict_proba(x))


# ------------------------------------------------------------------ tritonclient.http


def _triton(server: Server) -> Any:
    return triton.InferenceServerClient(f"127.0.0.1:{server.port}")


def test_triton_health_and_metadata(iris_server: Server, models: dict[str, SavedModel]) -> None:
    client = _triton(iris_server)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("iris")
    meta = client.get_model_metadata("iris")
    assert meta["name"] == "iris" and meta["versions"] == [models["iris"].sha256[:12]]
    assert [o["name"] for o in meta["outputs"]] == ["predict", "predict_proba"]
    assert client.is_model_ready("iris", model_version=meta["versions"][0])
    assert not client.is_model_ready("iris", model_version="1")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    with pytest.raises(InferenceServerException, match="no model named 'nope'"):
        client.get_model_metadata("nope")


@pytest.mark.parametrize(("datatype", "rows", "binary"), CASES)
def test_triton_infer(
    iris_server: Server, models: dict[str, SavedModel], datatype: str, rows: int, binary: bool
) -> None:
    client = _triton(iris_server)
    x, x64 = _rows(datatype, rows)
    tensor = triton.InferInput("input-0", list(x.shape), datatype)
    tensor.set_data_from_numpy(x, binary_data=binary)
    result = client.infer("iris", [tensor], request_id=f"t-{rows}")
    assert result.get_response()["id"] == f"t-{rows}"
    _check(models["iris"], x64, result.as_numpy("predict"), result.as_numpy("predict_proba"))

    outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in ("predict_proba", "predict")]
    named = client.infer("iris", [tensor], outputs=outputs)
    sent = named.get_response()["outputs"]
    assert [o["name"] for o in sent] == ["predict_proba", "predict"]
    assert all(("data" in o) != binary for o in sent), "outputs come back as asked: binary or JSON"
    _check(models["iris"], x64, named.as_numpy("predict"), named.as_numpy("predict_proba"))


def test_triton_one_named_output_in_a_versioned_url(iris_server: Server, models: dict[str, SavedModel]) -> None:
    client = _triton(iris_server)
    tensor = triton.InferInput("input-0", [3, 4], "FP64")
    tensor.set_data_from_numpy(np.array(IRIS_ROWS))
    version = models["iris"].sha256[:12]
    result = client.infer("iris", [tensor], model_version=version, outputs=[triton.InferRequestedOutput("predict")])
    assert [o["name"] for o in result.get_response()["outputs"]] == ["predict"]
    assert result.as_numpy("predict").tolist() == [0, 2, 1]


def test_triton_error_message_reaches_the_exception(iris_server: Server) -> None:
    tensor = triton.InferInput("input-0", [1, 3], "FP64")
    tensor.set_data_from_numpy(np.ones((1, 3)))
    with pytest.raises(InferenceServerException) as caught:
        _triton(iris_server).infer("iris", [tensor])
    assert caught.value.message() == SHORT_ROW_MESSAGE
    assert caught.value.status() == "400"


# ------------------------------------------------------------------ kserve InferenceRESTClient


def _kserve(config: RESTConfig | None = None) -> InferenceRESTClient:
    return InferenceRESTClient(config)


def test_kserve_v1_by_default(iris_server: Server, models: dict[str, SavedModel]) -> None:
    async def run() -> None:
        async with _kserve() as client:
            assert await client.is_server_live(iris_server.url)
            assert await client.is_model_ready(iris_server.url, "iris")
            for field in ("instances", "inputs"):
                body = await client.infer(iris_server.url, {field: ROWS.tolist()}, model_name="iris")
                assert body["predictions"] == models["iris"].estimator.predict(ROWS).tolist()
            with pytest.raises(httpx.HTTPStatusError) as caught:
                await client.infer(iris_server.url, {"instances": [[1, 2, 3]]}, model_name="iris")
            assert SHORT_ROW_MESSAGE in str(caught.value) and "400" in str(caught.value)

    asyncio.run(run())


def test_kserve_v2_health(iris_server: Server) -> None:
    async def run() -> None:
        async with _kserve(RESTConfig(protocol="v2")) as client:
            assert await client.is_server_live(iris_server.url)
            assert await client.is_server_ready(iris_server.url)
            assert await client.is_model_ready(iris_server.url, "iris")
            assert not await client.is_model_ready(iris_server.url, "nope")

    asyncio.run(run())


@pytest.mark.parametrize(("datatype", "rows", "binary"), CASES)
def test_kserve_v2_infer(
    iris_server: Server, models: dict[str, SavedModel], datatype: str, rows: int, binary: bool
) -> None:
    x, x64 = _rows(datatype, rows)
    tensor = InferInput("input-0", list(x.shape), datatype)
    tensor.set_data_from_numpy(x, binary_data=binary)

    async def run() -> None:
        async with _kserve(RESTConfig(protocol="v2")) as client:
            request = InferRequest("iris", [tensor], request_id="k1")
            response = await client.infer(iris_server.url, request, model_name="iris")
            assert response.id == "k1"
            assert [o.name for o in response.outputs] == ["predict", "predict_proba"]
            _check(models["iris"], x64, response.outputs[0].as_numpy(), response.outputs[1].as_numpy())

            wanted = [RequestedOutput(n, parameters={"binary_data": binary}) for n in ("predict_proba", "predict")]
            request = InferRequest("iris", [tensor], request_outputs=wanted)
            named = await client.infer(iris_server.url, request, model_name="iris")
            assert [o.name for o in named.outputs] == ["predict_proba", "predict"]
            _check(models["iris"], x64, named.outputs[1].as_numpy(), named.outputs[0].as_numpy())

    asyncio.run(run())


def test_kserve_v2_error_message_reaches_the_exception(iris_server: Server) -> None:
    tensor = InferInput("input-0", [1, 3], "FP64")
    tensor.set_data_from_numpy(np.ones((1, 3)))

    async def run() -> None:
        async with _kserve(RESTConfig(protocol="v2")) as client:
            with pytest.raises(httpx.HTTPStatusError) as caught:
                await client.infer(iris_server.url, InferRequest("iris", [tensor]), model_name="iris")
            assert SHORT_ROW_MESSAGE in str(caught.value)

    asyncio.run(run())
