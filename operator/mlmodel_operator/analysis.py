"""A rollout's analysis: the canary judged at each interval by the routers' own counts of its answers. Pure.

Every router pod counts each variant's answers by status class and their latency in a histogram, since it
started (``router.lua``, at ``/metrics`` on its admin port). The operator reads every pod at the start and at the
end of an interval (``measure``); the difference, summed over the pods, is what the variants answered in it. A
pod that restarted meanwhile counts from zero, as Prometheus's ``increase`` does. From that come the gates of
``spec.rollout.analysis``: the canary's success rate (the answers that were not 5xx, in percent), its p99
latency, and the p99 over the stable revision's in the same interval; and a Prometheus query's value, if set.
In shadow steps, the canary gets copies only, and its server compares each answer with the stable revision's
(the server's ``agreement``): the routers count the rows compared and agreed, and the agreement gates judge the
share that agreed and the mean difference of the class probabilities. In live steps, the routers also count each
variant's rows by predicted class (the server's ``predicted``), and the prediction-drift gate judges the
population stability index of the canary's classes against the stable revision's in the same interval.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

from mlmodel_operator.spec import Analysis

PASSED, FAILED, INCONCLUSIVE = "Passed", "Failed", "Inconclusive"
COMPARING = ("agreement", "probabilityDelta")  # the gates that judge the answers compared in shadow steps
_REQUESTS = "mlmodel_router_requests_total"
_BUCKET = "mlmodel_router_upstream_latency_seconds_bucket"
_PREDICTED = "mlmodel_router_predictions_total"
PSI_FLOOR = 0.5  # rows added to every class on both sides: a class one side never predicted has a finite PSI


_COMPARED = {
    "mlmodel_router_shadow_compared_requests_total": "requests",
    "mlmodel_router_shadow_uncompared_requests_total": "uncompared",
    "mlmodel_router_shadow_compared_rows_total": "rows",
    "mlmodel_router_shadow_agreed_rows_total": "agreed",
    "mlmodel_router_shadow_delta_sum": "delta",
    "mlmodel_router_shadow_probability_delta_count": "probability_rows",
}


@dataclass(frozen=True)
class Agreement:
    """A shadow's answers compared with a primary's: the copies compared and not, the rows compared and
    agreed, the sum of the rows' deltas, and the rows that had probabilities on both sides."""

    requests: int = 0
    uncompared: int = 0
    rows: int = 0
    agreed: int = 0
    delta: float = 0.0
    probability_rows: int = 0

    def __add__(self, other: Agreement) -> Agreement:
        return Agreement(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(Agreement)))

    def __sub__(self, other: Agreement) -> Agreement:
        return Agreement(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(Agreement)))

    @property
    def rate(self) -> float | None:
        """The share of the rows that agreed; ``None`` with none compared."""
        return self.agreed / self.rows if self.rows else None

    @property
    def probability_delta(self) -> float | None:
        """The mean over the rows of their probabilities' mean absolute difference."""
        return self.delta / self.probability_rows if self.probability_rows else None


def _samples(text: str, wanted: Collection[str]) -> Iterator[tuple[str, dict[str, str], float]]:
    """The samples of the metrics ``wanted`` in a router's ``/metrics`` (labelled, as the router writes them):
    name, labels, value."""
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        if name in wanted:
            labels_text, _, value = rest.rpartition("} ")
            yield (
                name,
                {k: v.strip('"') for k, v in (part.split("=", 1) for part in labels_text.split(","))},
                float(value),
            )


def comparisons(text: str) -> dict[tuple[str, str], Agreement]:
    """Each (shadow, primary) pair's comparisons in a router pod's ``/metrics``."""
    found: dict[tuple[str, str], dict[str, float]] = {}
    for name, labels, value in _samples(text, _COMPARED):
        found.setdefault((labels["variant"], labels["primary"]), {})[_COMPARED[name]] = value
    return {
        pair: Agreement(**{k: (v if k == "delta" else int(v)) for k, v in fields.items()})  # type: ignore[arg-type]
        for pair, fields in found.items()
    }


@dataclass(frozen=True)
class Tally:
    """A variant's answers: how many, how many were 5xx, and the latency histogram (upper bound in seconds,
    answers at or under it), cumulative as Prometheus keeps it, ``+Inf`` last."""

    requests: int = 0
    errors: int = 0
    buckets: tuple[tuple[float, int], ...] = ()
    compared: Agreement = Agreement()  # as a shadow: its answers compared with the other variants'
    predicted: tuple[tuple[str, int], ...] = ()  # rows answered by predicted class, sorted by class

    def __add__(self, other: Tally) -> Tally:
        requests, errors = self.requests + other.requests, self.errors + other.errors
        buckets, predicted = _merged(self.buckets, other.buckets), _merged(self.predicted, other.predicted)
        return Tally(requests, errors, buckets, self.compared + other.compared, predicted)

    def since(self, start: Tally) -> Tally:
        """What was counted after ``start``; all of it if a counter went back (the pod restarted)."""
        if self.requests < start.requests or self.errors < start.errors:
            return self
        buckets, predicted = _minus(self.buckets, start.buckets), _minus(self.predicted, start.predicted)
        compared = self.compared - start.compared
        if buckets is None or predicted is None or any(getattr(compared, f.name) < 0 for f in fields(Agreement)):
            return self
        return Tally(self.requests - start.requests, self.errors - start.errors, buckets, compared, predicted)

    def p99_ms(self) -> float | None:
        """The 99th percentile latency in milliseconds, interpolated in its bucket as ``histogram_quantile``
        does (the highest finite bound if it falls in ``+Inf``); ``None`` with no answer."""
        if not self.buckets or self.buckets[-1][1] == 0:
            return None
        rank = 0.99 * self.buckets[-1][1]
        lower, below = 0.0, 0
        for le, count in self.buckets:
            if count >= rank:
                if math.isinf(le):
                    return lower * 1000
                return 1000 * (lower + (le - lower) * (rank - below) / max(count - below, 1))
            lower, below = le, count
        return lower * 1000


def _merged(a: tuple[tuple[Any, int], ...], b: tuple[tuple[Any, int], ...]) -> tuple[tuple[Any, int], ...]:
    """Two sorted tuples of (key, count), their counts added by key."""
    merged: dict[Any, int] = dict(a)
    for key, count in b:
        merged[key] = merged.get(key, 0) + count
    return tuple(sorted(merged.items()))


def _minus(now: tuple[tuple[Any, int], ...], start: tuple[tuple[Any, int], ...]) -> tuple[tuple[Any, int], ...] | None:
    """``now``'s counts less ``start``'s, by key; ``None`` if one went back (the pod restarted)."""
    before = dict(start)
    if any(count < before.get(key, 0) for key, count in now):
        return None
    return tuple((key, count - before.get(key, 0)) for key, count in now)


def psi(canary: Mapping[str, int], stable: Mapping[str, int]) -> float | None:
    """The population stability index of the canary's predicted classes against the stable revision's:
    the sum over the classes of (canary share - stable share) x ln(canary share / stable share), every class
    given ``PSI_FLOOR`` more rows on both sides; ``None`` if either side answered nothing."""
    classes = sorted(canary.keys() | stable.keys())
    rows_c, rows_s = sum(canary.values()), sum(stable.values())
    if not rows_c or not rows_s:
        return None
    total_c, total_s = rows_c + PSI_FLOOR * len(classes), rows_s + PSI_FLOOR * len(classes)
    index = 0.0
    for label in classes:
        share_c = (canary.get(label, 0) + PSI_FLOOR) / total_c
        share_s = (stable.get(label, 0) + PSI_FLOOR) / total_s
        index += (share_c - share_s) * math.log(share_c / share_s)
    return index


Snapshot = Mapping[str, Mapping[str, Tally]]  # router pod -> variant -> its counts since the pod started


def parse(text: str) -> dict[str, Tally]:
    """Each variant's counts in a router pod's ``/metrics``."""
    requests: dict[str, int] = {}
    errors: dict[str, int] = {}
    buckets: dict[str, dict[float, int]] = {}
    predicted: dict[str, dict[str, int]] = {}
    for name, labels, value in _samples(text, (_REQUESTS, _BUCKET, _PREDICTED)):
        variant, count = labels.get("variant", ""), int(value)
        if name == _REQUESTS:
            requests[variant] = requests.get(variant, 0) + count
            if labels.get("status_class") == "5xx":
                errors[variant] = errors.get(variant, 0) + count
        elif name == _PREDICTED:
            predicted.setdefault(variant, {})[labels["class"]] = count
        else:
            buckets.setdefault(variant, {})[float(labels["le"])] = count
    compared: dict[str, Agreement] = {}
    for (shadow, primary), agreement in comparisons(text).items():
        if shadow != primary:
            compared[shadow] = compared.get(shadow, Agreement()) + agreement
    return {
        v: Tally(
            requests.get(v, 0),
            errors.get(v, 0),
            tuple(sorted(buckets.get(v, {}).items())),
            compared.get(v, Agreement()),
            tuple(sorted(predicted.get(v, {}).items())),
        )
        for v in requests.keys() | buckets.keys() | compared.keys() | predicted.keys()
    }


def window(start: Snapshot, end: Snapshot) -> dict[str, Tally]:
    """What each variant answered between two snapshots, over every router pod read at the end."""
    out: dict[str, Tally] = {}
    for pod, variants in end.items():
        for variant, tally in variants.items():
            counted = tally.since(start.get(pod, {}).get(variant, Tally()))
            out[variant] = out.get(variant, Tally()) + counted
    return out


@dataclass(frozen=True)
class Metric:
    """One gate's value in an interval beside its threshold; ``passed`` is ``None`` when it was not judged."""

    name: str
    value: float | None
    threshold: str
    passed: bool | None

    def status(self) -> dict[str, object]:
        out: dict[str, object] = {"name": self.name, "threshold": self.threshold}
        if self.value is not None:
            out["value"] = round(self.value, 3)
        return out | ({} if self.passed is None else {"passed": self.passed})

    def describe(self) -> str:
        shown = "no value" if self.value is None else f"{self.value:.3g}"
        return f"{self.name} {shown} (threshold {self.threshold})"


@dataclass(frozen=True)
class Interval:
    """The verdict on one interval: its result, the canary's answers and 5xx in it, and every gate."""

    result: str
    requests: int
    errors: int
    metrics: tuple[Metric, ...]
    compared: int = 0  # copies whose answers were compared with the stable revision's

    @property
    def failed(self) -> tuple[Metric, ...]:
        return tuple(m for m in self.metrics if m.passed is False)

    def status(self) -> dict[str, object]:
        out: dict[str, object] = {"result": self.result, "requests": self.requests, "errors": self.errors}
        out |= {"compared": self.compared} if self.compared else {}
        return out | {"metrics": [m.status() for m in self.metrics]}


def interval_of(raw: Mapping[str, Any]) -> Interval:
    """An ``Interval`` as ``Interval.status`` wrote it."""
    metrics = tuple(
        Metric(str(m["name"]), m.get("value"), str(m["threshold"]), m.get("passed")) for m in raw.get("metrics") or []
    )
    requests, errors, compared = (int(raw.get(key, 0)) for key in ("requests", "errors", "compared"))
    return Interval(str(raw["result"]), requests, errors, metrics, compared)


def judge(analysis: Analysis, canary: Tally, stable: Tally, query: float | None = None) -> Interval:
    """Judge the canary's answers in one interval (``stable``'s in the same one, and the Prometheus query's value
    at its end). Below ``minRequests`` answers of the canary (copies compared, for the agreement gates), a gate
    is not judged; with none judged, the interval is inconclusive."""
    answered, compared = canary.requests >= analysis.min_requests, canary.compared
    metrics: list[Metric] = []

    def gate(name: str, value: float | None, threshold: str, ok: bool, enough: bool = answered) -> None:
        metrics.append(Metric(name, value, threshold, ok if enough and value is not None else None))

    if analysis.min_success_rate is not None:
        rate = 100 * (canary.requests - canary.errors) / canary.requests if canary.requests else None
        minimum = analysis.min_success_rate
        gate("successRate", rate, f">= {minimum:g} %", rate is not None and rate >= minimum)
    p99, baseline = canary.p99_ms(), stable.p99_ms()
    if analysis.max_p99_ms is not None:
        maximum = analysis.max_p99_ms
        gate("p99LatencyMs", p99, f"<= {maximum:g} ms", p99 is not None and p99 <= maximum)
    if analysis.max_p99_ratio is not None:
        ratio = p99 / baseline if p99 is not None and baseline else None
        maximum = analysis.max_p99_ratio
        gate("p99LatencyRatio", ratio, f"<= {maximum:g}x the stable revision's", ratio is not None and ratio <= maximum)
    if analysis.prometheus is not None:
        low, high = analysis.prometheus.min, analysis.prometheus.max
        within = query is not None and (low is None or query >= low) and (high is None or query <= high)
        bounds = " and ".join(f"{sign} {b:g}" for sign, b in ((">=", low), ("<=", high)) if b is not None)
        gate("prometheus", query, bounds, within)
    enough = compared.requests >= analysis.min_requests
    if analysis.min_agreement is not None:
        rate, least = compared.rate, analysis.min_agreement
        gate(COMPARING[0], rate, f">= {least:g} of rows", rate is not None and rate >= least, enough)
    if analysis.max_probability_delta is not None:
        delta, most = compared.probability_delta, analysis.max_probability_delta
        gate(COMPARING[1], delta, f"<= {most:g}", delta is not None and delta <= most, enough)
    if analysis.max_psi is not None:
        index, most = psi(dict(canary.predicted), dict(stable.predicted)), analysis.max_psi
        gate("predictionDrift", index, f"<= {most:g} PSI", index is not None and index <= most)
    judged = [m.passed for m in metrics if m.passed is not None]
    result = INCONCLUSIVE if not judged else PASSED if all(judged) else FAILED
    return Interval(result, canary.requests, canary.errors, tuple(metrics), compared.requests)
