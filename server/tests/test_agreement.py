"""A shadow's answers against the primary's: the pure comparison (``agreement``), and a copy through the app
(``shadow``) in each protocol, one row or many, JSON or binary V2."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest

from mlmodel_server import agreement
from mlmodel_server.errors import InvalidPayload
from mlmodel_server.model import Prediction

from conftest import IRIS_ROWS, rows_for

LABELS = Prediction(np.array([0, 1, 2]), np.array([[0.9, 0.1, 0.0], [0.1, 0.8, 0.1], [0.0, 0.2, 0.8]]))


def _fields(header: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in header.split(";"))


def test_a_classifier_agrees_on_labels_and_sums_its_probability_deltas_row_by_row() -> None:
    other = Prediction(np.array([0, 2, 2]), np.array([[0.9, 0.1, 0.0], [0.1, 0.4, 0.5], [0.0, 0.2, 0.8]]))
    compared = agreement.compare(LABELS, other, classifier=True, tolerance=agreement.Tolerance())
    assert (compared.rows, compared.agreed, compared.probability_rows) == (3, 2, 3)
    assert compared.delta == pytest.approx(0.8 / 3)
    assert compared.buckets == (2, 2, 2, 2, 2, 3)  # two rows at 0, one at 0.267 (<= 0.5)
    assert _fields(compared.header()) == {
        "rows": "3",
        "agreed": "2",
        "delta": "0.266667",
        **{f"le_{b:g}": str(c) for b, c in zip(agreement.DELTA_BOUNDS, compared.buckets, strict=True)},
        "le_+Inf": "3",
    }


def test_labels_compare_as_text_and_missing_rows_disagree() -> None:
    words = Prediction(np.array(["setosa", "versicolor"]))
    shorter = Prediction(np.array(["setosa"]))
    compared = agreement.compare(words, shorter, classifier=True, tolerance=agreement.Tolerance())
    assert (compared.rows, compared.agreed, compared.probability_rows) == (2, 1, 0)
    assert compared.header() == "rows=2;agreed=1;delta=0"


def test_a_regressor_agrees_within_the_absolute_plus_relative_tolerance() -> None:
    primary = Prediction(np.array([10.0, 100.0, -5.0]))
    shadow = Prediction(np.array([10.5, 104.0, -7.0]))
    tolerance = agreement.Tolerance.parse("absolute=0.5, relative=0.05")
    compared = agreement.compare(primary, shadow, classifier=False, tolerance=tolerance)
    assert (compared.rows, compared.agreed) == (3, 2)  # 0.5 <= 1.0, 4 <= 5.5, 2 > 0.75
    assert compared.delta == pytest.approx(6.5)
    doubled = agreement.compare(primary, Prediction(primary.predictions * 2), classifier=False, tolerance=tolerance)
    assert doubled.agreed == 0


def test_a_multi_output_regressor_agrees_when_every_output_does() -> None:
    primary = Prediction(np.array([[1.0, 2.0], [3.0, 4.0]]))
    shadow = Prediction(np.array([[1.0, 2.1], [3.0, 9.0]]))
    compared = agreement.compare(primary, shadow, classifier=False, tolerance=agreement.Tolerance(absolute=0.2))
    assert (compared.rows, compared.agreed) == (2, 1)
    assert compared.delta == pytest.approx(0.05 + 2.5)


@pytest.mark.parametrize("text", ["absolute", "absolute=x", "within=1"])
def test_a_bad_tolerance_is_named(text: str) -> None:
    with pytest.raises(InvalidPayload, match="tolerance"):
        agreement.Tolerance.parse(text)


def _copy(client: Any, path: str, primary: bytes, request: bytes, **headers: str) -> Any:
    return client.post(
        path,
        data=primary + request,
        headers={"X-Mlmodel-Primary-Length": str(len(primary)), "Content-Type": "application/json", **headers},
    )


def test_a_copy_is_answered_as_the_request_and_compared_with_the_primary_answer(
    make_client: Callable[..., Any],
) -> None:
    client = make_client("iris")
    request = orjson.dumps({"instances": IRIS_ROWS})
    plain = client.post("/predict", data=request, content_type="application/json")
    assert "X-Mlmodel-Comparison" not in plain.headers
    same = _copy(client, "/predict", plain.data, request)
    assert same.status_code == 200 and same.data == plain.data
    assert _fields(same.headers["X-Mlmodel-Comparison"])["agreed"] == "3"
    flipped = orjson.loads(plain.data)
    flipped["predictions"] = [(p + 1) % 3 for p in flipped["predictions"]]
    changed = _fields(_copy(client, "/predict", orjson.dumps(flipped), request).headers["X-Mlmodel-Comparison"])
    assert (changed["rows"], changed["agreed"], changed["le_+Inf"]) == ("3", "0", "3")
    v1 = client.post("/v1/models/iris:predict", data=request, content_type="application/json")
    compared = _copy(client, "/v1/models/iris:predict", v1.data, request).headers["X-Mlmodel-Comparison"]
    assert _fields(compared) == {"rows": "3", "agreed": "3", "delta": "0"}  # V1 carries no probabilities


@pytest.mark.parametrize("binary", [False, True])
def test_a_v2_copy_is_compared_row_by_row_in_json_and_binary(make_client: Callable[..., Any], binary: bool) -> None:
    client = make_client("logreg")
    rows = rows_for("logreg")
    data = rows.astype("<f8").tobytes()
    tensor: dict[str, Any] = {"name": "x", "shape": list(rows.shape), "datatype": "FP64"}
    tensor |= {"parameters": {"binary_data_size": len(data)}} if binary else {"data": rows.ravel().tolist()}
    header = orjson.dumps({"inputs": [tensor], "parameters": {"binary_data_output": binary}})
    request, headers = (
        (header + data, {"Inference-Header-Content-Length": str(len(header))}) if binary else (header, {})
    )
    answer = client.post("/v2/models/logreg/infer", data=request, headers=headers, content_type="application/json")
    assert answer.status_code == 200, answer.data
    primary_headers = (
        {"X-Mlmodel-Primary-Header-Length": answer.headers["Inference-Header-Content-Length"]} if binary else {}
    )
    copy = _copy(client, "/v2/models/logreg/infer", answer.data, request, **headers, **primary_headers)
    fields = _fields(copy.headers["X-Mlmodel-Comparison"])
    assert (fields["rows"], fields["agreed"], fields["le_+Inf"]) == (str(len(rows)),) * 3


def test_a_regressor_copy_uses_the_routers_tolerance(make_client: Callable[..., Any]) -> None:
    client = make_client("linreg")
    request = orjson.dumps({"instances": rows_for("linreg").tolist()})
    answer = orjson.loads(client.post("/predict", data=request, content_type="application/json").data)
    off = orjson.dumps({"predictions": [p + 0.5 for p in answer["predictions"]]})
    strict = _copy(client, "/predict", off, request).headers["X-Mlmodel-Comparison"]
    loose = _copy(client, "/predict", off, request, **{"X-Mlmodel-Tolerance": "absolute=0.6"})
    assert _fields(strict)["agreed"] == "0"
    assert _fields(loose.headers["X-Mlmodel-Comparison"])["agreed"] == "25"
    assert float(_fields(strict)["delta"]) == pytest.approx(12.5)


def test_a_bad_primary_length_is_a_400_and_an_answer_that_cannot_be_read_is_not_compared(
    make_client: Callable[..., Any],
) -> None:
    client = make_client("iris")
    request = orjson.dumps({"instances": IRIS_ROWS})
    bad = client.post("/predict", data=request, headers={"X-Mlmodel-Primary-Length": "99999"})
    assert bad.status_code == 400 and "X-Mlmodel-Primary-Length" in bad.json["error"]["message"]
    unreadable = _copy(client, "/predict", b"<html>", request)
    assert unreadable.status_code == 200 and "X-Mlmodel-Comparison" not in unreadable.headers
