"""What an answer predicted, in one header the router counts: a rollout's prediction-drift gate compares the
canary's distribution of predicted classes with the stable revision's. Pure.

``X-Mlmodel-Predicted: setosa=2;virginica=1``: the rows of the answer by predicted class (a regressor's, by the
bin of its output: quarter-decade bins, ``1.78..3.16``, ``-10..-5.62``, ``0`` under 1e-9), each label
percent-encoded. At most ``MAX_LABELS`` labels an answer; the rows of any other go under ``OTHER``.
"""

from __future__ import annotations

import math
from collections import Counter
from urllib.parse import quote

import numpy as np

HEADER = "X-Mlmodel-Predicted"
MAX_LABELS = 16
OTHER = "other"
BINS_PER_DECADE = 4
TINY = 1e-9


def regression_bin(value: float) -> str:
    """The label of ``value``'s bin: quarter-decades of its magnitude, signed."""
    if not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    magnitude = abs(value)
    if magnitude < TINY:
        return "0"
    k = math.floor(BINS_PER_DECADE * math.log10(magnitude))
    low, high = 10 ** (k / BINS_PER_DECADE), 10 ** ((k + 1) / BINS_PER_DECADE)
    return f"{low:.3g}..{high:.3g}" if value > 0 else f"-{high:.3g}..-{low:.3g}"


def header(predictions: np.ndarray, *, classifier: bool) -> str:
    """The header's value for one answer's ``predictions``; empty for predictions of more than one output."""
    if predictions.ndim != 1 or not len(predictions):
        return ""
    values = predictions.tolist()
    counts = Counter(str(v) for v in values) if classifier else Counter(regression_bin(float(v)) for v in values)
    kept = counts.most_common(MAX_LABELS)
    other = len(values) - sum(n for _, n in kept)
    parts = [f"{quote(label, safe='')}={n}" for label, n in kept]
    return ";".join(parts + ([f"{OTHER}={other}"] if other else []))
