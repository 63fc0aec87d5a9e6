"""The Open Inference Protocol (V2): a request to a feature matrix, a prediction to a response.

A request sends one ``[rows, features]`` tensor, or one ``[rows]`` tensor per named feature (with an input
schema, a single tensor named after one of its columns is that column).
With the binary tensor data extension, the body is ``Inference-Header-Content-Length`` bytes of
JSON, then the raw bytes of each input that has ``parameters.binary_data_size``, in input order;
outputs asked for with ``binary_data`` (or the request's ``binary_data_output``) come back the
same way. No Flask here: every problem is a domain error that names the input or output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from mlmodel_server import tensors
from mlmodel_server.errors import FeatureNameError, InvalidPayload, MissingValue, NonNumericValue, WrongType
from mlmodel_server.model import Prediction
from mlmodel_server.protocol import Schema, check_matrix, kind, parse_json

OUTPUTS = ("predict", "predict_proba")
EXTENSIONS = ("binary_tensor_data",)


@dataclass(frozen=True)
class Output:
    """A requested output, and whether it goes back as raw bytes."""

    name: str
    binary: bool


@dataclass(frozen=True)
class Request:
    """A decoded request."""

    x: np.ndarray
    outputs: tuple[Output, ...]
    request_id: str | None

    @property
    def wants_proba(self) -> bool:
        return any(output.name == "predict_proba" for output in self.outputs)


def offered_outputs(has_proba: bool) -> tuple[str, ...]:
    """The outputs of a model: ``predict``, and ``predict_proba`` where it has one."""
    return OUTPUTS if has_proba else OUTPUTS[:1]


def split_body(body: bytes, header_length: str | None, json_limit: int) -> tuple[dict[str, Any], memoryview]:
    """The JSON header of a request body, and the binary data after it (``header_length`` bytes in); the
    JSON part is held to ``json_limit`` bytes, the binary part only to the body limit."""
    if header_length is None:
        return parse_json(body, json_limit), memoryview(b"")
    try:
        length = int(header_length)
    except ValueError:
        length = 0
    if not 0 < length <= len(body):
        raise InvalidPayload(
            f"Inference-Header-Content-Length must be a number of bytes from 1 to the body's {len(body)}, "
            f"got {header_length!r:.40}"
        )
    return parse_json(body[:length], json_limit), memoryview(body)[length:]


def decode(payload: dict[str, Any], binary: memoryview, schema: Schema) -> Request:
    """Decode a request whose inputs are JSON ``data`` or ``binary_data_size`` bytes of ``binary``."""
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidPayload('"inputs" must be a non-empty list of tensors {"name", "shape", "datatype", "data"}')
    cursor = _Cursor(binary)
    tensors_ = [_tensor(i, tensor, cursor, schema) for i, tensor in enumerate(inputs)]
    if cursor.left:
        raise InvalidPayload(f"{cursor.left} bytes of binary data follow the inputs that no input claims")
    if len(tensors_) == 1 and not _is_column(tensors_[0][0], schema):
        _, values, shape = tensors_[0]
        x = values.reshape(shape if len(shape) == 2 else (1, -1))
    else:
        x = _stack_named_columns(tensors_, schema)
    request_id = payload.get("id")
    return Request(
        x=check_matrix(x, schema, where="inputs"),
        outputs=_outputs(payload.get("outputs"), _parameters(payload, "the request"), schema),
        request_id=str(request_id) if request_id is not None else None,
    )


def encode(
    prediction: Prediction, request: Request, *, model_name: str, model_version: str
) -> tuple[bytes, int | None]:
    """The response body, and the length of its JSON header when binary outputs follow it."""
    outputs = []
    raw = []
    for output in request.outputs:
        values = prediction.predictions if output.name == "predict" else prediction.probabilities
        assert values is not None  # decode only lets predict_proba through when the model has it
        datatype = tensors.datatype_of(values)
        entry: dict[str, Any] = {"name": output.name, "shape": list(values.shape), "datatype": datatype}
        if output.binary:
            raw.append(tensors.to_bytes(values, datatype))
            entry["parameters"] = {"binary_data_size": len(raw[-1])}
        else:
            entry["data"] = values.ravel().tolist()
        outputs.append(entry)
    body: dict[str, Any] = {"model_name": model_name, "model_version": model_version, "outputs": outputs}
    if request.request_id is not None:
        body["id"] = request.request_id
    header = orjson.dumps(body)
    return header + b"".join(raw), len(header) if raw else None


def read_answer(body: bytes, header_length: str | None) -> Prediction:
    """A V2 answer back as a prediction: its ``predict`` output, and ``predict_proba`` when present, as JSON
    ``data`` or binary data (a shadow compares another server's with its own)."""
    header, binary = split_body(body, header_length, len(body))
    outputs = header.get("outputs")
    if not isinstance(outputs, list):
        raise InvalidPayload('the answer has no "outputs" list')
    cursor, found = _Cursor(binary), {}
    for output in outputs:
        if not isinstance(output, dict) or output.get("name") not in OUTPUTS:
            continue
        name, shape, datatype = output["name"], output.get("shape"), output.get("datatype")
        size = _parameters(output, f'output "{name}"').get("binary_data_size")
        if isinstance(size, int):
            if datatype != "BYTES" and datatype not in tensors.NUMERIC_DTYPES:
                raise InvalidPayload(f'output "{name}": datatype {datatype!r:.40} is not a V2 datatype')
            values = tensors.elements(cursor.take(size, f'output "{name}"'), str(datatype))
        else:
            values = np.asarray(output.get("data"))
        found[name] = values.reshape(shape) if isinstance(shape, list) else values
    if "predict" not in found:
        raise InvalidPayload('the answer has no "predict" output')
    proba = found.get("predict_proba")
    return Prediction(found["predict"], None if proba is None else proba.astype(np.float64))


class _Cursor:
    """Hands out the binary part of a request, input by input."""

    def __init__(self, data: memoryview) -> None:
        self._data = data
        self._offset = 0

    @property
    def left(self) -> int:
        return len(self._data) - self._offset

    def take(self, size: int, label: str) -> memoryview:
        if size > self.left:
            raise InvalidPayload(f"{label}: binary_data_size is {size}, but only {self.left} bytes are left")
        self._offset += size
        return self._data[self._offset - size : self._offset]


def _tensor(index: int, tensor: Any, cursor: _Cursor, schema: Schema) -> tuple[str, np.ndarray, list[int]]:
    """One input's name, its values as a flat float64 array, and its shape."""
    if not isinstance(tensor, dict):
        raise InvalidPayload(f"inputs[{index}] must be an object, got {kind(tensor)}")
    name = tensor.get("name")
    if not isinstance(name, str):
        raise InvalidPayload(f'inputs[{index}]: "name" must be a string')
    label = f'input "{name}"'
    shape, datatype = tensor.get("shape"), tensor.get("datatype")
    if (
        not isinstance(shape, list)
        or len(shape) > 2
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise InvalidPayload(f'{label}: "shape" must be [rows, features] or [rows], got {shape!r:.60}')
    if not isinstance(datatype, str) or datatype not in tensors.NUMERIC_DTYPES:
        raise NonNumericValue(
            f"{label}: datatype {datatype!r:.40} is not supported; use one of {', '.join(tensors.NUMERIC_DTYPES)}"
        )
    column = schema.inputs.by_name.get(name) if schema.inputs is not None else None
    if datatype == "BOOL" and column is not None and column.type != "boolean":
        raise WrongType(f"{label}: datatype BOOL, but the column is a {column.type} ({column.datatype})")
    count = math.prod(shape)
    size = _parameters(tensor, label).get("binary_data_size")
    if size is not None:
        if "data" in tensor:
            raise InvalidPayload(f'{label}: send "data" or parameters.binary_data_size, not both')
        expected = count * tensors.NUMERIC_DTYPES[datatype].itemsize
        if not isinstance(size, int) or isinstance(size, bool) or size != expected:
            raise InvalidPayload(
                f"{label}: binary_data_size is {size!r:.40}, but shape {shape} of {datatype} takes {expected} bytes"
            )
        values = tensors.from_bytes(cursor.take(size, label), datatype)
    else:
        data = tensor.get("data")
        if not isinstance(data, list):
            raise InvalidPayload(f'{label}: "data" must be a list, got {kind(data)}')
        values = _json_values(data, label)
        if values.size != count:
            raise InvalidPayload(f"{label}: shape {shape} needs {count} values, got {values.size}")
    if not schema.allow_nan and np.isnan(values).any():
        raise MissingValue(
            f"{label}: value {int(np.argmax(np.isnan(values)))} is missing (null or NaN), "
            "and this model does not accept missing values"
        )
    return name, values, shape


def _json_values(data: list[Any], label: str) -> np.ndarray:
    """JSON ``data``, flat or nested, as a flat float64 array; ``null`` is NaN."""
    try:
        values = np.array(data)
    except (ValueError, TypeError, OverflowError):
        values = None
    if values is not None and values.dtype.kind in "biuf":
        return values.astype(np.float64, copy=False).ravel()
    out: list[float] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            out.append(_number(value, label, len(out)))
        else:
            stack.pop()
    return np.array(out, dtype=np.float64)


def _number(value: Any, label: str, position: int) -> float:
    if value is None:
        return math.nan
    if isinstance(value, dict):
        raise InvalidPayload(f'{label}: "data" must hold numbers, got an object at value {position}')
    if not isinstance(value, bool | int | float):
        raise NonNumericValue(f'{label}: "data" must hold only numbers, got {kind(value)} at value {position}')
    try:
        return float(value)
    except OverflowError:
        raise NonNumericValue(f"{label}: value {position} is out of range") from None


def _is_column(name: str, schema: Schema) -> bool:
    """Whether an input called ``name`` is one column of the input schema."""
    return schema.inputs is not None and name in schema.inputs.by_name


def _stack_named_columns(tensors_: list[tuple[str, np.ndarray, list[int]]], schema: Schema) -> np.ndarray:
    """One input per feature to a matrix in the model's order; a feature the input schema does not require may
    be left out (its values are missing)."""
    names = schema.feature_names
    given = [name for name, _, _ in tensors_]
    if names is None:
        raise FeatureNameError(
            "several inputs were sent, one per feature, but the model was fitted without feature names: "
            "send one input of shape [rows, features]"
        )
    columns = {name: values for name, values, _ in tensors_}
    required = schema.required
    if len(columns) != len(given) or not set(names).issuperset(given) or not required.issubset(given):
        missing = [n for n in names if n in required and n not in columns]
        unknown = [n for n in given if n not in names]
        problems = [f"missing {', '.join(missing) or 'none'}", f"unknown {', '.join(unknown) or 'none'}"]
        repeated = sorted({n for n in given if given.count(n) > 1})
        if repeated:
            problems.append(f"repeated {', '.join(repeated)}")
        raise FeatureNameError(f"inputs must be one per feature: {'; '.join(problems)}; expected {', '.join(names)}")
    lengths = {name: values.size for name, values in columns.items()}
    if len(set(lengths.values())) != 1:
        raise InvalidPayload(f"inputs differ in length: {lengths}")
    rows = next(iter(lengths.values()))
    return np.column_stack([columns[n] if n in columns else np.full(rows, np.nan) for n in names])


def _outputs(requested: Any, parameters: dict[str, Any], schema: Schema) -> tuple[Output, ...]:
    """The requested outputs once each, in order; every output when none is named."""
    offered = offered_outputs(schema.has_proba)
    binary = _flag(parameters, "binary_data_output", False, "the request")
    if requested is None or requested == []:
        return tuple(Output(name, binary) for name in offered)
    if not isinstance(requested, list) or not all(_named_object(o) for o in requested):
        raise InvalidPayload('"outputs" must be a list of objects with a string "name"')
    chosen: dict[str, Output] = {}
    for output in requested:
        name = output["name"]
        if name not in offered:
            raise InvalidPayload(f'unknown output "{name:.60}"; this model offers {", ".join(offered)}')
        label = f'output "{name}"'
        chosen.setdefault(name, Output(name, _flag(_parameters(output, label), "binary_data", binary, label)))
    return tuple(chosen.values())


def _named_object(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("name"), str)


def _parameters(holder: dict[str, Any], label: str) -> dict[str, Any]:
    parameters = holder.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise InvalidPayload(f'{label}: "parameters" must be an object, got {kind(parameters)}')
    return parameters


def _flag(parameters: dict[str, Any], key: str, default: bool, label: str) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise InvalidPayload(f"{label}: parameters.{key} must be true or false, got {kind(value)}")
    return value
