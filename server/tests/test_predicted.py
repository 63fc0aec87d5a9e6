"""``X-Mlmodel-Predicted``: each answer's rows by predicted class, as the router counts them for the
prediction-drift gate (``predicted``); every prediction route answers it, the lane and Flask alike."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from test_lane import _binary, _both_ways, _v2

from mlmodel_server import predicted
from mlmodel_server.model import LoadedModel

from conftest import IRIS_ROWS, rows_for


def test_a_classifiers_rows_are_counted_by_label_percent_encoded() -> None:
    labels = np.array(["setosa", "virginica", "setosa", "a b;c=d"])
    assert predicted.header(labels, classifier=True) == "setosa=2;virginica=1;a%20b%3Bc%3Dd=1"
    assert predicted.header(np.array([1, 0, 1]), classifier=True) == "1=2;0=1"


def test_a_regressors_outputs_are_counted_by_quarter_decade_bins() -> None:
    assert predicted.regression_bin(2.0) == "1.78..3.16"
    assert predicted.regression_bin(1.0) == "1..1.78"
    assert predicted.regression_bin(-7.0) == "-10..-5.62"
    assert predicted.regression_bin(0.05) == "0.0316..0.0562"
    assert [predicted.regression_bin(v) for v in (0.0, 1e-12, np.nan, np.inf, -np.inf)] == [
        "0",
        "0",
        "nan",
        "inf",
        "-inf",
    ]
    assert predicted.header(np.array([2.0, 2.5, 30.0]), classifier=False) == "1.78..3.16=2;17.8..31.6=1"


def test_labels_past_the_cap_go_under_other_and_multi_output_is_not_counted() -> None:
    many = np.array([f"c{i}" for i in range(predicted.MAX_LABELS + 4)] + ["c0"])
    parts = dict(part.split("=") for part in predicted.header(many, classifier=True).split(";"))
    assert len(parts) == predicted.MAX_LABELS + 1 and parts["c0"] == "2" and parts[predicted.OTHER] == "4"
    assert predicted.header(np.zeros((3, 2)), classifier=True) == ""
    assert predicted.header(np.array([]), classifier=True) == ""


def _expected(model: LoadedModel, rows: Any) -> dict[str, int]:
    return dict(Counter(str(label) for label in model.estimator.predict(np.asarray(rows)).tolist()))


def _counted(value: str) -> dict[str, int]:
    return {label: int(n) for label, n in (part.split("=") for part in value.split(";"))}


@pytest.mark.parametrize(
    ("path", "body", "content_type", "headers"),
    [
        ("/predict", json.dumps({"features": IRIS_ROWS}).encode(), "application/json", {}),
        ("/v1/models/iris:predict", json.dumps({"instances": IRIS_ROWS}).encode(), "application/json", {}),
        ("/v2/models/iris/infer", _v2(IRIS_ROWS), "application/json", {}),
        ("/v2/models/iris/infer", *_binary(IRIS_ROWS)[:1], "application/octet-stream", _binary(IRIS_ROWS)[1]),
    ],
    ids=["predict", "v1", "v2", "v2-binary"],
)
def test_every_prediction_route_answers_its_rows_by_class_from_the_lane_and_flask(
    make_client: Callable[..., Any],
    loaded: Callable[[str], LoadedModel],
    path: str,
    body: bytes,
    content_type: str,
    headers: dict[str, str],
) -> None:
    lane, flask = _both_ways(make_client("iris"), path, body, content_type, headers)
    assert lane.status_code == 200, lane.data
    assert _counted(lane.headers[predicted.HEADER]) == _expected(loaded("iris"), IRIS_ROWS)
    assert flask.headers[predicted.HEADER] == lane.headers[predicted.HEADER]


def test_a_regressors_answer_is_counted_by_bin(
    make_client: Callable[..., Any], loaded: Callable[[str], LoadedModel]
) -> None:
    rows = rows_for("linreg")[:5]
    reply = make_client("linreg").post("/predict", json={"features": rows.tolist()})
    outputs = loaded("linreg").estimator.predict(rows)
    assert _counted(reply.headers[predicted.HEADER]) == dict(Counter(predicted.regression_bin(v) for v in outputs))
