"""Decoding and encoding, as pure functions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mlmodel_server import errors, protocol
from mlmodel_server.model import Prediction

NAMES = ("a", "b", "c")
SCHEMA = protocol.Schema(n_features=3, feature_names=NAMES, allow_nan=False, max_rows=5, has_proba=True)
NAN_OK = protocol.Schema(n_features=3, feature_names=None, allow_nan=True, max_rows=5, has_proba=False)


def test_rows_of_numbers_become_a_float_matrix() -> None:
    x = protocol.decode_predict({"features": [[1, 2, 3], [4.5, 5, True]]}, SCHEMA)
    assert x.dtype == np.float64
    assert x.tolist() == [[1, 2, 3], [4.5, 5, 1]]


def test_instances_and_a_single_flat_row() -> None:
    assert protocol.decode_predict({"instances": [1, 2, 3]}, SCHEMA).tolist() == [[1, 2, 3]]


def test_named_rows_follow_the_fitted_feature_order() -> None:
    x = protocol.decode_predict({"instances": [{"c": 3, "a": 1, "b": 2}]}, SCHEMA)
    assert x.tolist() == [[1, 2, 3]]


@pytest.mark.parametrize(
    ("payload", "error", "words"),
    [
        ({}, errors.InvalidPayload, ['"features" or "instances"', "neither"]),
        ({"features": [[1, 2, 3]], "instances": [[1, 2, 3]]}, errors.InvalidPayload, ["both"]),
        ({"features": "abc"}, errors.InvalidPayload, ["must be a list of rows", "a string"]),
        ({"features": []}, errors.EmptyBatch, ['"features" has no rows']),
        ({"features": [[1, 2, 3]] * 6}, errors.BatchTooLarge, ["6 rows", "limit is 5", "--max-batch-size"]),
        ({"features": [[1, 2, 3], [1, 2]]}, errors.FeatureCountMismatch, ["row 1", "expected 3", "got 2"]),
        ({"features": [[1, 2, 3, 4]]}, errors.FeatureCountMismatch, ["row 0", "expected 3", "got 4"]),
        ({"features": [[1, "x", 3]]}, errors.NonNumericValue, ["row 0", 'feature 1 ("b")', "string"]),
        ({"features": [[1, 2, "3"]]}, errors.NonNumericValue, ["row 0", "feature 2", "string '3'"]),
        ({"features": [[1, [2], 3]]}, errors.InvalidPayload, ["row 0", "feature 1", "a list"]),
        ({"features": [[1, {"x": 1}, 3]]}, errors.InvalidPayload, ["feature 1", "an object"]),
        ({"features": [[1, 2, 3], 4]}, errors.InvalidPayload, ["row 1", "a number"]),
        ({"features": [[[1, 2, 3]]]}, errors.FeatureCountMismatch, ["row 0", "expected 3", "got 1"]),
        ({"features": [[1, None, 3]]}, errors.MissingValue, ["row 0", 'feature 1 ("b")', "missing"]),
        ({"features": [[1, 2, 1e400]]}, errors.NonNumericValue, ["row 0", "feature 2", "out of range"]),
        ({"features": [[1, 2, 10**400]]}, errors.NonNumericValue, ["row 0", "feature 2", "out of range"]),
        ({"instances": [{"a": 1, "b": 2}]}, errors.FeatureNameError, ["row 0", "missing feature(s) c"]),
        ({"instances": [{"a": 1, "b": 2, "c": 3, "d": 4}]}, errors.FeatureNameError, ["unknown feature(s) d"]),
        ({"instances": [{"a": 1, "b": 2, "c": 3}, [1, 2, 3]]}, errors.InvalidPayload, ["row 1", "like row 0"]),
    ],
)
def test_bad_rows_name_what_is_wrong(payload: dict[str, Any], error: type[Exception], words: list[str]) -> None:
    with pytest.raises(error) as caught:
        protocol.decode_predict(payload, SCHEMA)
    for word in words:
        assert word in str(caught.value)


def test_null_is_nan_where_the_model_accepts_missing_values() -> None:
    x = protocol.decode_predict({"features": [[1, None, 3]]}, NAN_OK)
    assert np.isnan(x[0, 1])


def test_named_rows_need_a_model_fitted_with_names() -> None:
    with pytest.raises(errors.FeatureNameError, match=r"without feature names"):
        protocol.decode_predict({"features": [{"a": 1}]}, NAN_OK)


@pytest.mark.parametrize("body", [b"", b"{", b"NaN", b"[1, 2", b"\xff"])
def test_malformed_json(body: bytes) -> None:
    with pytest.raises(errors.MalformedJSON):
        protocol.parse_json(body, 1 << 20)


def test_json_that_is_not_an_object() -> None:
    with pytest.raises(errors.InvalidPayload, match=r"JSON object, got a list"):
        protocol.parse_json(b"[1, 2]", 1 << 20)


def test_v1_takes_instances_or_inputs() -> None:
    assert protocol.decode_v1({"inputs": [[1, 2, 3]]}, SCHEMA).shape == (1, 3)
    with pytest.raises(errors.InvalidPayload, match='"instances" or "inputs"'):
        protocol.decode_v1({"features": [[1, 2, 3]]}, SCHEMA)


def test_encodings() -> None:
    prediction = Prediction(np.array([0, 2]), np.array([[0.9, 0.1, 0.0], [0.0, 0.2, 0.8]]))
    assert protocol.encode_predict(prediction) == {
        "predictions": [0, 2],
        "probabilities": [[0.9, 0.1, 0.0], [0.0, 0.2, 0.8]],
    }
    assert protocol.encode_v1(prediction) == {"predictions": [0, 2]}
