"""The model's input contract: an MLflow signature's column-based ``inputs``, as MLflow writes them in MLmodel.

``[{"type": "double", "name": "sepal length (cm)", "required": true}, ...]``: the columns, in order, with
their types; a column that is not required may be left out of a request (each of its values is then missing).
Tensor-based and unnamed specs, and types the model cannot be given as numbers, are refused. No numpy here:
the server parses ``--input-schema`` before it imports anything heavy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property

from mlmodel_server.errors import InvalidInputSchema

DATATYPES = {"double": "FP64", "float": "FP32", "long": "INT64", "integer": "INT32", "boolean": "BOOL"}
"""The MLflow column types the server takes, and their Open Inference Protocol datatypes."""

WHOLE = {"long": (-(2.0**63), 2.0**63), "integer": (-(2.0**31), 2.0**31), "boolean": (0.0, 2.0)}
"""The types whose values are whole numbers, each with its range [low, high)."""

_EXPECTED = {"long": "a whole number (long)", "integer": "a whole number (integer)", "boolean": "true or false"}


@dataclass(frozen=True)
class Column:
    """One column of the contract."""

    name: str
    type: str
    required: bool = True

    @property
    def datatype(self) -> str:
        """The column's Open Inference Protocol datatype."""
        return DATATYPES[self.type]

    @property
    def expected(self) -> str:
        """What a value of this column is, for a message."""
        return _EXPECTED.get(self.type, "a number")


@dataclass(frozen=True)
class InputSchema:
    """The columns a request sends, in the order the model takes them, and where they were read."""

    columns: tuple[Column, ...]
    origin: str

    @cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    @cached_property
    def required(self) -> frozenset[str]:
        """The names of the columns every request must send."""
        return frozenset(column.name for column in self.columns if column.required)

    @cached_property
    def by_name(self) -> dict[str, Column]:
        return {column.name: column for column in self.columns}

    @cached_property
    def numeric(self) -> tuple[int, ...]:
        """The positions of the columns whose values are numbers, where a boolean is the wrong type."""
        return tuple(i for i, column in enumerate(self.columns) if column.type != "boolean")

    def describe(self) -> list[dict[str, object]]:
        """The columns as ``/model-info`` shows them."""
        return [{"name": c.name, "type": c.type, "required": c.required} for c in self.columns]


def parse(text: str, origin: str) -> InputSchema:
    """The contract in ``text``, an MLflow signature's ``inputs``; ``origin`` names it in errors."""
    try:
        specs = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidInputSchema(f"{origin} is not valid JSON: {err}") from None
    if not isinstance(specs, list) or not specs:
        raise InvalidInputSchema(f"{origin} must be a non-empty JSON list of columns, as MLflow writes in MLmodel")
    columns = tuple(_column(i, spec, origin) for i, spec in enumerate(specs))
    names = [column.name for column in columns]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InvalidInputSchema(f"{origin} names column(s) more than once: {', '.join(repeated)}")
    return InputSchema(columns, origin)


def _column(index: int, spec: object, origin: str) -> Column:
    if not isinstance(spec, dict):
        raise InvalidInputSchema(f"{origin}: input {index} must be an object with a type and a name")
    kind = spec.get("type")
    if kind == "tensor":
        raise InvalidInputSchema(
            f"{origin} is tensor-based; the server needs a column-based signature, with a name and a type "
            "per column (infer it from a pandas DataFrame)"
        )
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInputSchema(
            f"{origin}: input {index} has no name; the server needs every column named "
            "(infer the signature from a pandas DataFrame)"
        )
    if kind not in DATATYPES:
        raise InvalidInputSchema(
            f'{origin}: column "{name}" has type {kind!r:.40}; the model is given numbers, '
            f"so the types are {', '.join(DATATYPES)}"
        )
    required = spec.get("required", True)
    if not isinstance(required, bool):
        raise InvalidInputSchema(f'{origin}: column "{name}": "required" must be true or false')
    return Column(name, str(kind), required)
