"""Decode rows into feature matrices and encode predictions, and what every protocol shares.

- ``/predict``: ``{"features": rows}`` or ``{"instances": rows}`` (the tutorials' shape);
- KServe / TF-Serving V1: ``{"instances": rows}`` or ``{"inputs": rows}``;
- the Open Inference Protocol (V2) lives in ``v2``, and checks its matrix with ``check_matrix``.

Rows are lists of numbers, or objects keyed by feature name. With an input schema (``signature``), named
rows are checked against its columns and every value against its column's type. No Flask here: every
problem is raised as a domain error whose message names the row, feature or field.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from mlmodel_server.errors import (
    BatchTooLarge,
    EmptyBatch,
    FeatureCountMismatch,
    FeatureNameError,
    InvalidPayload,
    MalformedJSON,
    MissingValue,
    NonNumericValue,
    PayloadTooLarge,
    WrongType,
)
from mlmodel_server.model import Prediction
from mlmodel_server.signature import WHOLE, InputSchema


@dataclass(frozen=True)
class Schema:
    """What decoding needs to know about the model being served."""

    n_features: int | None
    feature_names: tuple[str, ...] | None
    allow_nan: bool
    max_rows: int
    has_proba: bool
    inputs: InputSchema | None = None  # the input contract; its names are ``feature_names``

    @property
    def required(self) -> frozenset[str]:
        """The feature names every named row or V2 request must send."""
        if self.inputs is not None:
            return self.inputs.required
        return frozenset(self.feature_names or ())


_NUM = rb"-?+(?:0|[1-9][0-9]*+)(?:\.[0-9]++)?+(?:[eE][+-]?+[0-9]++)?+"
_ROW = rb"\[\s*+" + _NUM + rb"(?:\s*+,\s*+" + _NUM + rb")*+\s*+\]"
_NUMERIC_ROWS = re.compile(rb"\[\s*+(?:" + _ROW + rb"(?:\s*+,\s*+" + _ROW + rb")*+)?+\s*+\]|" + _ROW)
_ENVELOPE = re.compile(rb'\s*+\{\s*+"([a-z]++)"\s*+:\s*+(\[[-+.,\[\]0-9eE\s]*\])\s*+\}\s*+')
_ROW_SPAN = re.compile(rb"\[[^\[\]]*+\]")
_UNSPACE = b"[] \t\r\n"


ROWS_FIELDS = ("features", "instances", "inputs")
"""Fields that hold rows in ``/predict`` and V1 bodies: ``parse_json`` decodes them straight to a matrix."""


def check_json_size(size: int, limit: int) -> None:
    """Refuse a JSON body over ``limit`` bytes (``--max-json-bytes``): decoding costs a multiple of it."""
    if size > limit:
        raise PayloadTooLarge(f"JSON request body is {size} bytes; the limit is {limit} bytes (--max-json-bytes)")


def parse_json(body: bytes, limit: int, rows_fields: tuple[str, ...] = ()) -> dict[str, Any]:
    """Parse a request body that must be a JSON object of at most ``limit`` bytes.

    A body that is only ``{"<one of rows_fields>": <rows of plain numbers>}`` is decoded straight into a
    float matrix, without a Python object per value: the payload then holds that matrix under its field.
    """
    check_json_size(len(body), limit)
    if not body:
        raise MalformedJSON("request body is empty: send a JSON object")
    envelope = _ENVELOPE.fullmatch(body) if rows_fields else None
    if envelope is not None and envelope.group(1).decode() in rows_fields:
        start, end = envelope.span(2)
        if _NUMERIC_ROWS.fullmatch(body, start, end):
            return {envelope.group(1).decode(): _numeric_rows(body, start, end)}
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise MalformedJSON(f"request body is not valid JSON: {err}") from None
    if not isinstance(payload, dict):
        raise InvalidPayload(f"request body must be a JSON object, got {kind(payload)}")
    return payload


def _numeric_rows(body: bytes, start: int, end: int) -> np.ndarray:
    """The matrix of rows checked by ``_NUMERIC_ROWS`` in ``body[start:end]``; rows are counted and their
    widths compared before a value is converted."""
    n_rows = body.count(b"[", start, end) - 1
    if n_rows > 0:
        width = body.count(b",", start, body.index(b"]", start)) + 1
        for r, row in enumerate(_ROW_SPAN.finditer(body, start + 1, end - 1)):
            got = body.count(b",", row.start(), row.end()) + 1
            if got != width:
                raise FeatureCountMismatch(f"row {r}: expected {width} features, got {got}")
    values = np.fromstring(body[start:end].translate(None, _UNSPACE), sep=",")  # text mode: not deprecated
    if n_rows <= 0:  # one flat row, or none
        return values.reshape(1 if values.size else 0, values.size)
    return values.reshape(n_rows, width)


def decode_predict(payload: dict[str, Any], schema: Schema) -> np.ndarray:
    """``{"features": rows}`` or ``{"instances": rows}``."""
    return _rows_field(payload, ("features", "instances"), schema)


def decode_v1(payload: dict[str, Any], schema: Schema) -> np.ndarray:
    """KServe V1: ``{"instances": rows}`` or ``{"inputs": rows}``."""
    return _rows_field(payload, ("instances", "inputs"), schema)


def check_matrix(x: np.ndarray, schema: Schema, *, where: str) -> np.ndarray:
    """Check a float matrix against the model: rows, width, finiteness, missing values."""
    if x.shape[0] == 0:
        raise EmptyBatch(f'"{where}" has no rows: send at least one')
    if x.shape[0] > schema.max_rows:
        raise BatchTooLarge(f'"{where}" has {x.shape[0]} rows; the limit is {schema.max_rows} (--max-batch-size)')
    if schema.n_features is not None and x.shape[1] != schema.n_features:
        raise FeatureCountMismatch(f"row 0: expected {schema.n_features} features, got {x.shape[1]}")
    finite = np.isfinite(x)
    if not finite.all():
        row, col = (int(v) for v in np.argwhere(~finite)[0])
        if not np.isnan(x[row, col]):
            raise NonNumericValue(f"row {row}, {_feature(col, schema)}: {x[row, col]} is out of range")
        if not schema.allow_nan:
            raise MissingValue(
                f"row {row}, {_feature(col, schema)}: missing value (null or NaN), "
                "and this model does not accept missing values"
            )
    _check_whole(x, schema)
    return x


def _check_whole(x: np.ndarray, schema: Schema) -> None:
    """The values of the input schema's long, integer and boolean columns are whole numbers in their range,
    or missing."""
    for col, column in enumerate(schema.inputs.columns if schema.inputs is not None else ()):
        bounds = WHOLE.get(column.type)
        if bounds is None:
            continue
        values = x[:, col]
        wrong = ((values != np.trunc(values)) & ~np.isnan(values)) | (values < bounds[0]) | (values >= bounds[1])
        if wrong.any():
            row = int(np.argmax(wrong))
            raise WrongType(f"row {row}, {_feature(col, schema)}: expected {column.expected}, got {values[row]}")


def encode_predict(prediction: Prediction) -> dict[str, Any]:
    """``{"predictions": [...], "probabilities": [[...]]}``."""
    body: dict[str, Any] = {"predictions": prediction.predictions.tolist()}
    if prediction.probabilities is not None:
        body["probabilities"] = prediction.probabilities.tolist()
    return body


def encode_v1(prediction: Prediction) -> dict[str, Any]:
    """KServe V1: ``{"predictions": [...]}``."""
    return {"predictions": prediction.predictions.tolist()}


def read_answer(body: bytes) -> Prediction:
    """A ``/predict`` or V1 answer back as a prediction (a shadow compares another server's with its own)."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise MalformedJSON(f"the answer is not valid JSON: {err}") from None
    predictions = payload.get("predictions") if isinstance(payload, dict) else None
    if not isinstance(predictions, list):
        raise InvalidPayload('the answer has no "predictions" list')
    probabilities = payload.get("probabilities")
    proba = None if probabilities is None else np.asarray(probabilities, dtype=np.float64)
    return Prediction(np.asarray(predictions), proba)


def _rows_field(payload: dict[str, Any], fields: tuple[str, ...], schema: Schema) -> np.ndarray:
    present = [f for f in fields if f in payload]
    if len(present) != 1:
        names = " or ".join(f'"{f}"' for f in fields)
        problem = "both are present" if present else "neither is present"
        raise InvalidPayload(f"send the rows under exactly one of {names}; {problem}")
    field = present[0]
    rows = payload[field]
    if not isinstance(rows, list | np.ndarray):  # an array: rows parse_json decoded straight to a matrix
        raise InvalidPayload(f'"{field}" must be a list of rows, got {kind(rows)}')
    if isinstance(rows, list) and rows and all(_is_scalar(v) for v in rows):
        rows = [rows]  # one flat row, as many tutorials send it
    if len(rows) > schema.max_rows:
        raise BatchTooLarge(f'"{field}" has {len(rows)} rows; the limit is {schema.max_rows} (--max-batch-size)')
    if isinstance(rows, np.ndarray):
        return check_matrix(rows, schema, where=field)
    if rows and isinstance(rows[0], dict):
        rows = _named_rows(rows, schema)
    return check_matrix(_to_matrix(rows, schema), schema, where=field)


def _to_matrix(rows: list[Any], schema: Schema) -> np.ndarray:
    """Rows to a float matrix: numpy's converter when the rows are clean, else a walk that names the fault."""
    try:
        x = np.array(rows)
    except (ValueError, TypeError, OverflowError):
        x = None
    if x is not None and x.ndim == 2 and x.dtype.kind in "biuf":
        return x.astype(np.float64, copy=False)
    if not rows:
        return np.empty((0, schema.n_features or 0))
    width = schema.n_features if schema.n_features is not None else _width(rows[0], 0)
    out = np.empty((len(rows), width))
    for r, row in enumerate(rows):
        if _width(row, r) != width:
            raise FeatureCountMismatch(f"row {r}: expected {width} features, got {len(row)}")
        for c, value in enumerate(row):
            out[r, c] = _number(value, r, c, schema)
    return out


def _width(row: Any, r: int) -> int:
    if not isinstance(row, list):
        raise InvalidPayload(f"row {r}: expected a list of numbers or an object, got {kind(row)}")
    return len(row)


def _number(value: Any, r: int, c: int, schema: Schema) -> float:
    if value is None:
        return math.nan  # check_matrix decides whether missing values are allowed
    if isinstance(value, bool | int | float):
        try:
            return float(value)
        except OverflowError:
            raise NonNumericValue(f"row {r}, {_feature(c, schema)}: {value} is out of range") from None
    expected = _expected(c, schema)
    if isinstance(value, list | dict):
        raise InvalidPayload(f"row {r}, {_feature(c, schema)}: expected {expected}, got {kind(value)}")
    raise NonNumericValue(f"row {r}, {_feature(c, schema)}: expected {expected}, got {kind(value)} {value!r:.40}")


def _named_rows(rows: list[Any], schema: Schema) -> list[list[Any]]:
    """Objects keyed by feature name to lists in the model's order; a column the input schema does not require
    may be left out (its value is missing), and a boolean is a boolean column's value only."""
    names = schema.feature_names
    if names is None:
        raise FeatureNameError(
            "rows are objects, but the model was fitted without feature names: "
            f"send each row as a list of {schema.n_features or 'N'} numbers"
        )
    known = set(names)
    required = schema.required
    numeric = schema.inputs.numeric if schema.inputs is not None else ()
    out = []
    for r, row in enumerate(rows):
        if not isinstance(row, dict):
            raise InvalidPayload(f"row {r}: expected an object like row 0, got {kind(row)}")
        if not known.issuperset(row) or (len(row) != len(names) and not required.issubset(row)):
            missing = [n for n in names if n in required and n not in row]
            unknown = [k for k in row if k not in known]
            problems = []
            if missing:
                problems.append(f"missing feature(s) {', '.join(missing)}")
            if unknown:
                problems.append(f"unknown feature(s) {', '.join(unknown)}")
            raise FeatureNameError(f"row {r}: {'; '.join(problems)}; expected {', '.join(names)}")
        values = [row.get(n) for n in names]
        for c in numeric:
            if isinstance(values[c], bool):
                raise WrongType(f"row {r}, {_feature(c, schema)}: expected {_expected(c, schema)}, got a boolean")
        out.append(values)
    return out


def _expected(col: int, schema: Schema) -> str:
    if schema.inputs is not None and col < len(schema.inputs.columns):
        return schema.inputs.columns[col].expected
    return "a number"


def _feature(col: int, schema: Schema) -> str:
    if schema.feature_names is not None and col < len(schema.feature_names):
        return f'feature {col} ("{schema.feature_names[col]}")'
    return f"feature {col}"


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def kind(value: Any) -> str:
    """How to name the JSON type of ``value`` in a message."""
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )
