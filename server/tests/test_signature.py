"""The input schema (an MLflow signature's inputs): parsing, and requests checked against it, as pure functions."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from mlmodel_server import errors, protocol, signature, v2

COLUMNS = [
    {"type": "double", "name": "x", "required": True},
    {"type": "long", "name": "n", "required": True},
    {"type": "boolean", "name": "flag", "required": True},
    {"type": "integer", "name": "k", "required": True},
    {"type": "float", "name": "opt", "required": False},
]
INPUTS = signature.parse(orjson.dumps(COLUMNS).decode(), "--input-schema")
SCHEMA = protocol.Schema(
    n_features=5, feature_names=INPUTS.names, allow_nan=True, max_rows=5, has_proba=True, inputs=INPUTS
)
STRICT = protocol.Schema(
    n_features=5, feature_names=INPUTS.names, allow_nan=False, max_rows=5, has_proba=True, inputs=INPUTS
)
ROW = {"x": 1.5, "n": 7, "flag": True, "k": -3, "opt": 0.25}


def test_parse_keeps_order_types_and_required() -> None:
    assert INPUTS.names == ("x", "n", "flag", "k", "opt")
    assert [c.datatype for c in INPUTS.columns] == ["FP64", "INT64", "BOOL", "INT32", "FP32"]
    assert INPUTS.required == {"x", "n", "flag", "k"}
    assert INPUTS.describe()[4] == {"name": "opt", "type": "float", "required": False}
    assert signature.parse('[{"type": "double", "name": "a"}]', "s").columns[0].required  # MLflow's default


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("not json", ["is not valid JSON"]),
        ("{}", ["non-empty JSON list"]),
        ("[]", ["non-empty JSON list"]),
        ('[{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 4]}}]', ["tensor-based"]),
        ('[{"type": "double", "required": true}]', ["input 0 has no name"]),
        ('[{"type": "string", "name": "city"}]', ['column "city"', "'string'", "double, float, long"]),
        ('[{"type": "array", "items": {"type": "double"}, "name": "v"}]', ['column "v"', "'array'"]),
        ('[{"type": "double", "name": "a"}, {"type": "long", "name": "a"}]', ["more than once: a"]),
        ('[{"type": "double", "name": "a", "required": "yes"}]', ['"required" must be true or false']),
        ("[1]", ["input 0 must be an object"]),
    ],
)
def test_bad_schemas_are_refused_with_a_reason(text: str, words: list[str]) -> None:
    with pytest.raises(errors.InvalidInputSchema) as caught:
        signature.parse(text, "--input-schema")
    assert caught.value.message.startswith("--input-schema")
    for word in words:
        assert word in caught.value.message


def test_named_rows_follow_the_schema_and_may_leave_out_an_optional_column() -> None:
    rows = [{**ROW}, {"k": 2, "flag": False, "n": 0, "x": -1}]
    x = protocol.decode_predict({"instances": rows}, SCHEMA)
    assert x[0].tolist() == [1.5, 7, 1, -3, 0.25]
    assert x[1, :4].tolist() == [-1, 0, 0, 2] and x[1, 4] != x[1, 4]  # the optional column left out: missing
    with pytest.raises(errors.MissingValue, match=r'row 1, feature 4 \("opt"\): missing value'):
        protocol.decode_predict({"instances": rows}, STRICT)


@pytest.mark.parametrize(
    ("row", "error", "words"),
    [
        ({k: v for k, v in ROW.items() if k != "n"}, errors.FeatureNameError, ["missing feature(s) n"]),
        ({**ROW, "z": 1}, errors.FeatureNameError, ["unknown feature(s) z"]),
        ({**ROW, "x": True}, errors.WrongType, ['feature 0 ("x")', "expected a number, got a boolean"]),
        ({**ROW, "x": "1.5"}, errors.NonNumericValue, ['feature 0 ("x")', "expected a number, got a string"]),
        ({**ROW, "n": 2.5}, errors.WrongType, ['feature 1 ("n")', "expected a whole number (long), got 2.5"]),
        ({**ROW, "n": 2.0**63}, errors.WrongType, ['feature 1 ("n")', "whole number (long)"]),
        ({**ROW, "k": 2**31}, errors.WrongType, ['feature 3 ("k")', "expected a whole number (integer)"]),
        ({**ROW, "flag": 2}, errors.WrongType, ['feature 2 ("flag")', "expected true or false, got 2.0"]),
        ({**ROW, "flag": "yes"}, errors.NonNumericValue, ['feature 2 ("flag")', "expected true or false"]),
    ],
)
def test_a_missing_unknown_or_wrongly_typed_column_is_named(
    row: dict[str, Any], error: type[Exception], words: list[str]
) -> None:
    for decode in (protocol.decode_predict, protocol.decode_v1):
        with pytest.raises(error) as caught:
            decode({"instances": [ROW, row]}, SCHEMA)
        for word in ["row 1", *words]:
            assert word in str(caught.value)


def test_positional_rows_are_checked_for_width_and_values() -> None:
    assert protocol.decode_predict({"instances": [[1.5, 7, 1, -3, 0.25]]}, SCHEMA).shape == (1, 5)
    with pytest.raises(errors.FeatureCountMismatch, match="expected 5 features, got 4"):
        protocol.decode_predict({"instances": [[1.5, 7, 1, -3]]}, SCHEMA)
    with pytest.raises(errors.WrongType, match=r'row 0, feature 1 \("n"\): expected a whole number \(long\)'):
        protocol.decode_predict({"instances": [[1.5, 7.5, 1, -3, 0.25]]}, SCHEMA)


def _column(name: str, data: list[Any], datatype: str = "FP64") -> dict[str, Any]:
    return {"name": name, "shape": [len(data)], "datatype": datatype, "data": data}


def _v2(inputs: list[dict[str, Any]], schema: protocol.Schema = SCHEMA) -> v2.Request:
    return v2.decode({"inputs": inputs}, memoryview(b""), schema)


def test_v2_columns_by_name_with_their_datatypes() -> None:
    inputs = [
        _column("k", [4, 5], "INT32"),
        _column("flag", [True, False], "BOOL"),
        _column("x", [0.5, 1.5]),
        _column("n", [1, 2], "INT64"),
    ]
    x = _v2(inputs).x
    assert x[:, :4].tolist() == [[0.5, 1, 1, 4], [1.5, 2, 0, 5]] and (x[:, 4] != x[:, 4]).all()


def test_v2_one_column_alone_is_that_column() -> None:
    schema = signature.parse('[{"type": "double", "name": "a"}]', "s")
    one = protocol.Schema(
        n_features=1, feature_names=("a",), allow_nan=False, max_rows=5, has_proba=False, inputs=schema
    )
    assert _v2([_column("a", [1, 2, 3])], one).x.tolist() == [[1], [2], [3]]


@pytest.mark.parametrize(
    ("inputs", "error", "words"),
    [
        (
            [_column("x", [1.0]), _column("flag", [1], "BOOL"), _column("k", [1])],
            errors.FeatureNameError,
            ["missing n"],
        ),
        (
            [_column(n, [1]) for n in ("x", "n", "flag", "k", "zz")],
            errors.FeatureNameError,
            ["missing none", "unknown zz"],
        ),
        ([_column(n, [1]) for n in ("x", "n", "flag", "k", "k")], errors.FeatureNameError, ["repeated k"]),
        ([_column(n, [1], "BOOL") for n in ("x", "n", "flag", "k")], errors.WrongType, ['input "x"', "BOOL", "double"]),
        ([_column(n, [0.5]) for n in ("x", "n", "flag", "k")], errors.WrongType, ['feature 1 ("n")', "got 0.5"]),
        ([_column("x", ["a"]), *(_column(n, [1]) for n in ("n", "flag", "k"))], errors.NonNumericValue, ['input "x"']),
    ],
)
def test_v2_a_missing_unknown_or_wrongly_typed_column_is_named(
    inputs: list[dict[str, Any]], error: type[Exception], words: list[str]
) -> None:
    with pytest.raises(error) as caught:
        _v2(inputs)
    for word in words:
        assert word in str(caught.value)


def test_v2_a_positional_tensor_is_checked_for_width() -> None:
    tensor = {"name": "input-0", "shape": [1, 5], "datatype": "FP64", "data": [1.5, 7, 1, -3, 0.25]}
    assert _v2([tensor]).x.tolist() == [[1.5, 7, 1, -3, 0.25]]
    with pytest.raises(errors.FeatureCountMismatch, match="expected 5 features, got 4"):
        _v2([{**tensor, "shape": [1, 4], "data": [1.5, 7, 1, -3]}])
