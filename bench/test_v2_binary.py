"""Self-checks for ``v2_binary.py``: both bodies are one request to the server; both answers read back."""

from __future__ import annotations

import numpy as np
from v2_binary import HEADER_LENGTH, binary_request, json_request, predictions

from mlmodel_server import v2
from mlmodel_server.model import Prediction
from mlmodel_server.protocol import Schema

ROWS = np.random.RandomState(0).normal(size=(7, 30)).tolist()
SCHEMA = Schema(n_features=30, feature_names=None, allow_nan=False, max_rows=10, has_proba=True)


def _decode(body: bytes, headers: dict[str, str]) -> v2.Request:
    return v2.decode(*v2.split_body(body, headers.get(HEADER_LENGTH), len(body)), SCHEMA)


def test_both_bodies_carry_the_same_rows() -> None:
    as_json, as_binary = _decode(*json_request(ROWS)), _decode(*binary_request(ROWS))
    assert as_json.x.tolist() == as_binary.x.tolist() == ROWS
    assert [o.binary for o in as_json.outputs] == [False, False]
    assert [o.binary for o in as_binary.outputs] == [True, True]


def test_predictions_read_json_and_binary_answers() -> None:
    prediction = Prediction(np.arange(7), np.full((7, 3), 1 / 3))
    for request in (_decode(*json_request(ROWS)), _decode(*binary_request(ROWS))):
        body, length = v2.encode(prediction, request, model_name="logreg", model_version="v")
        assert predictions(body, None if length is None else str(length)) == list(range(7))
