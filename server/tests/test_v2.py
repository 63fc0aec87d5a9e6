"""The Open Inference Protocol (V2), JSON and binary, as pure functions."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from mlmodel_server import errors, tensors, v2
from mlmodel_server.model import Prediction
from mlmodel_server.protocol import Schema

NAMES = ("a", "b", "c")
SCHEMA = Schema(n_features=3, feature_names=NAMES, allow_nan=False, max_rows=5, has_proba=True)
NAN_OK = Schema(n_features=3, feature_names=None, allow_nan=True, max_rows=5, has_proba=False)
NO_BINARY = memoryview(b"")


def _tensor(**overrides: Any) -> dict[str, Any]:
    return {"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6], **overrides}


def _decode(payload: dict[str, Any], schema: Schema = SCHEMA, binary: bytes = b"") -> v2.Request:
    return v2.decode(payload, memoryview(binary), schema)


def _binary_body(header: dict[str, Any], *parts: bytes) -> tuple[bytes, str]:
    json_part = orjson.dumps(header)
    return json_part + b"".join(parts), str(len(json_part))


def test_one_tensor_flat_or_nested() -> None:
    flat = _decode({"inputs": [_tensor()], "id": "r1"})
    nested = _decode({"inputs": [_tensor(data=[[1, 2, 3], [4, 5, 6]])]})
    assert flat.x.tolist() == nested.x.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert flat.request_id == "r1"


def test_one_tensor_per_named_feature() -> None:
    inputs = [{"name": n, "shape": [2, 1], "datatype": "FP64", "data": [i, i + 10]} for i, n in enumerate("cab")]
    assert _decode({"inputs": inputs}).x.tolist() == [[1, 2, 0], [11, 12, 10]]


def test_every_output_when_none_is_named() -> None:
    assert [o.name for o in _decode({"inputs": [_tensor()]}).outputs] == ["predict", "predict_proba"]
    assert [o.name for o in _decode({"inputs": [_tensor()], "outputs": []}).outputs] == ["predict", "predict_proba"]
    assert [o.name for o in _decode({"inputs": [_tensor()]}, NAN_OK).outputs] == ["predict"]


def test_named_outputs_once_each_in_order() -> None:
    named = [{"name": "predict_proba"}, {"name": "predict"}, {"name": "predict_proba"}]
    decoded = _decode({"inputs": [_tensor()], "outputs": named})
    assert [o.name for o in decoded.outputs] == ["predict_proba", "predict"]
    assert decoded.wants_proba


def test_binary_outputs_per_output_or_for_the_request() -> None:
    outputs = [{"name": "predict", "parameters": {"binary_data": True}}, {"name": "predict_proba"}]
    decoded = _decode({"inputs": [_tensor()], "outputs": outputs})
    assert [o.binary for o in decoded.outputs] == [True, False]
    every = _decode({"inputs": [_tensor()], "parameters": {"binary_data_output": True}})
    assert [o.binary for o in every.outputs] == [True, True]
    overridden = {"name": "predict", "parameters": {"binary_data": False}}
    one = _decode({"inputs": [_tensor()], "outputs": [overridden], "parameters": {"binary_data_output": True}})
    assert [o.binary for o in one.outputs] == [False]


@pytest.mark.parametrize(("datatype", "dtype"), [("FP32", "<f4"), ("FP64", "<f8"), ("INT32", "<i4"), ("INT64", "<i8")])
def test_binary_inputs(datatype: str, dtype: str) -> None:
    x = np.arange(6, dtype=dtype).reshape(2, 3)
    tensor = {"name": "x", "shape": [2, 3], "datatype": datatype, "parameters": {"binary_data_size": x.nbytes}}
    body, length = _binary_body({"inputs": [tensor]}, x.tobytes())
    payload, binary = v2.split_body(body, length, 1 << 20)
    assert v2.decode(payload, binary, SCHEMA).x.tolist() == x.tolist()


def test_binary_and_json_inputs_mix_in_order() -> None:
    a, c = np.array([1.0, 2.0]), np.array([5, 6], dtype="<i8")
    inputs = [
        {"name": "a", "shape": [2], "datatype": "FP64", "parameters": {"binary_data_size": 16}},
        {"name": "b", "shape": [2], "datatype": "FP32", "data": [3, 4]},
        {"name": "c", "shape": [2], "datatype": "INT64", "parameters": {"binary_data_size": 16}},
    ]
    body, length = _binary_body({"inputs": inputs}, a.tobytes(), c.tobytes())
    assert v2.decode(*v2.split_body(body, length, 1 << 20), SCHEMA).x.tolist() == [[1, 3, 5], [2, 4, 6]]


def test_null_is_nan_where_the_model_accepts_missing_values() -> None:
    assert np.isnan(_decode({"inputs": [_tensor(data=[1, None, 3, 4, 5, 6])]}, NAN_OK).x[0, 1])
    with pytest.raises(errors.MissingValue, match=r'input "x": value 1 is missing'):
        _decode({"inputs": [_tensor(data=[1, None, 3, 4, 5, 6])]})
    nan = np.array([1, np.nan, 3], dtype="<f8")
    tensor = {"name": "x", "shape": [1, 3], "datatype": "FP64", "parameters": {"binary_data_size": 24}}
    with pytest.raises(errors.MissingValue, match=r'input "x"'):
        _decode({"inputs": [tensor]}, binary=nan.tobytes())


@pytest.mark.parametrize(
    ("payload", "binary", "error", "words"),
    [
        ({"inputs": []}, b"", errors.InvalidPayload, ['"inputs"', "non-empty"]),
        ({"inputs": [_tensor(datatype="BYTES")]}, b"", errors.NonNumericValue, ['input "x"', "BYTES"]),
        ({"inputs": [_tensor(shape=[2, 2])]}, b"", errors.InvalidPayload, ['input "x"', "needs 4 values, got 6"]),
        ({"inputs": [_tensor(shape="2x3")]}, b"", errors.InvalidPayload, ['input "x"', '"shape"']),
        ({"inputs": [_tensor(shape=[1, 2, 3])]}, b"", errors.InvalidPayload, ["[rows, features]"]),
        ({"inputs": [_tensor(data=["a"] * 6)]}, b"", errors.NonNumericValue, ['input "x"', "only numbers"]),
        ({"inputs": [_tensor(data=[1, {"b": 2}, 3, 4, 5, 6])]}, b"", errors.InvalidPayload, ["an object"]),
        ({"inputs": [_tensor(shape=[3, 2])]}, b"", errors.FeatureCountMismatch, ["expected 3 features, got 2"]),
        ({"inputs": [_tensor()], "outputs": [{"name": "nope"}]}, b"", errors.InvalidPayload, ['unknown output "nope"']),
        ({"inputs": [_tensor()], "outputs": "predict"}, b"", errors.InvalidPayload, ['"outputs"']),
        ({"inputs": [_tensor()], "parameters": []}, b"", errors.InvalidPayload, ['"parameters"']),
        (
            {"inputs": [_tensor()], "parameters": {"binary_data_output": "yes"}},
            b"",
            errors.InvalidPayload,
            ["binary_data_output", "true or false"],
        ),
        (
            {"inputs": [_tensor(name="a"), _tensor(name="z")]},
            b"",
            errors.FeatureNameError,
            ["missing b, c", "unknown z"],
        ),
        (
            {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": 20}}]},
            bytes(20),
            errors.InvalidPayload,
            ['input "x"', "binary_data_size is 20", "shape [2, 3] of FP32 takes 24 bytes"],
        ),
        (
            {"inputs": [_tensor(parameters={"binary_data_size": 24})]},
            bytes(24),
            errors.InvalidPayload,
            ['input "x"', "not both"],
        ),
        (
            {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": 24}}]},
            bytes(12),
            errors.InvalidPayload,
            ['input "x"', "only 12 bytes are left"],
        ),
        ({"inputs": [_tensor()]}, bytes(4), errors.InvalidPayload, ["4 bytes of binary data", "no input claims"]),
    ],
)
def test_bad_requests_name_the_problem(
    payload: dict[str, Any], binary: bytes, error: type[Exception], words: list[str]
) -> None:
    with pytest.raises(error) as caught:
        _decode(payload, binary=binary)
    for word in words:
        assert word in str(caught.value)


@pytest.mark.parametrize("length", ["0", "-1", "abc", "1e3", "100000", "\xb2"])
def test_a_bad_header_length_is_a_bad_request(length: str) -> None:
    with pytest.raises(errors.InvalidPayload, match="Inference-Header-Content-Length"):
        v2.split_body(b'{"inputs": []}', length, 1 << 20)


def test_a_header_length_that_cuts_the_json_is_malformed() -> None:
    with pytest.raises(errors.MalformedJSON):
        v2.split_body(b'{"inputs": []}', "5", 1 << 20)


def test_encode_json_and_binary() -> None:
    prediction = Prediction(np.array([0, 2]), np.array([[0.9, 0.1, 0.0], [0.0, 0.2, 0.8]]))
    request = v2.Request(np.zeros((2, 3)), (v2.Output("predict", False), v2.Output("predict_proba", True)), "id-7")
    body, length = v2.encode(prediction, request, model_name="iris", model_version="abc")
    assert length is not None
    header = orjson.loads(body[:length])
    assert header["id"] == "id-7" and header["model_version"] == "abc"
    assert header["outputs"][0] == {"name": "predict", "shape": [2], "datatype": "INT64", "data": [0, 2]}
    assert header["outputs"][1] == {
        "name": "predict_proba",
        "shape": [2, 3],
        "datatype": "FP64",
        "parameters": {"binary_data_size": 48},
    }
    np.testing.assert_array_equal(np.frombuffer(body[length:], "<f8").reshape(2, 3), prediction.probabilities)
    json_only = v2.Request(np.zeros((2, 3)), (v2.Output("predict", False),), None)
    body, length = v2.encode(prediction, json_only, model_name="iris", model_version="abc")
    assert length is None and "id" not in orjson.loads(body)


def test_strings_go_back_as_length_prefixed_bytes() -> None:
    raw = tensors.to_bytes(np.array(["setosa", "ab"]), "BYTES")
    assert raw == b"\x06\x00\x00\x00setosa\x02\x00\x00\x00ab"


@pytest.mark.parametrize(
    ("values", "datatype"),
    [
        (np.array([True]), "BOOL"),
        (np.array([1], dtype=np.int32), "INT32"),
        (np.array([1.0]), "FP64"),
        (np.array(["a"]), "BYTES"),
        (np.array([1], dtype=np.uint8), "UINT8"),
    ],
)
def test_datatypes(values: np.ndarray, datatype: str) -> None:
    assert tensors.datatype_of(values) == datatype
