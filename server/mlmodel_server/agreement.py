"""How far a shadow's answers are from the primary's, request by request and row by row. Pure.

A classifier's rows agree when their labels are equal; where both answers carry class probabilities, the
row's delta is the mean absolute difference of its probabilities. A regressor's rows agree when every
output is within ``absolute + relative * |primary's|``; the row's delta is the mean absolute difference.
The router sums what ``Comparison.header`` says over every copy, per primary and shadow (``shadow``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlmodel_server import protocol, v2
from mlmodel_server.errors import InvalidPayload
from mlmodel_server.model import Prediction

DELTA_BOUNDS = (0.001, 0.01, 0.05, 0.1, 0.2, 0.5)
"""The histogram of the probability delta per row (a row of probabilities is within 1 of another)."""


@dataclass(frozen=True)
class Tolerance:
    """How far a regressor's output may be from the primary's and still agree."""

    absolute: float = 0.0
    relative: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Tolerance:
        """``absolute=0.1,relative=0.05`` (either may be left out); the router sends the spec's."""
        values: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, _, value = part.partition("=")
            if key not in ("absolute", "relative"):
                raise InvalidPayload(f"tolerance: unknown part {part!r:.40}; expected absolute=N,relative=N")
            try:
                values[key] = float(value)
            except ValueError:
                raise InvalidPayload(f"tolerance: {key} must be a number, got {value!r:.40}") from None
        return cls(**values)


@dataclass(frozen=True)
class Comparison:
    """One request compared: its rows, those that agreed, the sum of the rows' deltas, and the rows with
    probabilities on both sides in the delta's histogram (cumulative, one count per ``DELTA_BOUNDS`` bound)."""

    rows: int
    agreed: int
    delta: float
    probability_rows: int = 0
    buckets: tuple[int, ...] = ()

    def header(self) -> str:
        """The ``X-Mlmodel-Comparison`` header: ``rows=2;agreed=1;delta=0.25;le_0.001=0;…;le_+Inf=2``."""
        parts = [f"rows={self.rows}", f"agreed={self.agreed}", f"delta={self.delta:.6g}"]
        if self.probability_rows:
            parts += [f"le_{bound:g}={count}" for bound, count in zip(DELTA_BOUNDS, self.buckets, strict=True)]
            parts.append(f"le_+Inf={self.probability_rows}")
        return ";".join(parts)


def read(path: str, body: bytes, header_length: str | None) -> Prediction:
    """An answer of the prediction route at ``path``, in its protocol."""
    return v2.read_answer(body, header_length) if path.startswith("/v2/") else protocol.read_answer(body)


def compare(primary: Prediction, shadow: Prediction, *, classifier: bool, tolerance: Tolerance) -> Comparison:
    """``shadow``'s answer to a request against ``primary``'s, row by row: a row only one of them has
    disagrees."""
    mine, theirs = primary.predictions, shadow.predictions
    rows, common = max(len(mine), len(theirs)), min(len(mine), len(theirs))
    mine, theirs = mine[:common], theirs[:common]
    if classifier:
        agreed = int(np.sum(mine.astype(str) == theirs.astype(str)))
        delta = 0.0
    else:
        a, b = _numbers(mine).reshape(common, -1), _numbers(theirs).reshape(common, -1)
        if a.shape != b.shape:
            return Comparison(rows, 0, 0.0)
        difference = np.abs(a - b)
        agreed = int(np.sum(np.all(difference <= tolerance.absolute + tolerance.relative * np.abs(a), axis=1)))
        delta = float(difference.mean(axis=1).sum()) if common else 0.0
    p, q = primary.probabilities, shadow.probabilities
    if not classifier or p is None or q is None or p.shape != q.shape or len(p) != rows:
        return Comparison(rows, agreed, delta)
    deltas = np.abs(p - q).mean(axis=1)
    buckets = tuple(int(np.sum(deltas <= bound)) for bound in DELTA_BOUNDS)
    return Comparison(rows, agreed, float(deltas.sum()), len(deltas), buckets)


def _numbers(values: np.ndarray) -> np.ndarray:
    try:
        return values.astype(np.float64)
    except ValueError:
        raise InvalidPayload("a regressor's answer holds a value that is not a number") from None
