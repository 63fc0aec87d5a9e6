"""The operator's client-side rate limit."""

from __future__ import annotations

import pytest
from mlmodel_operator.ratelimit import Bucket


def test_a_burst_goes_at_once_then_requests_are_spaced_by_one_over_qps() -> None:
    bucket = Bucket(qps=10, burst=3)
    assert [bucket.take(0.0) for _ in range(3)] == [0, 0, 0]
    assert [bucket.take(0.0) for _ in range(3)] == pytest.approx([0.1, 0.2, 0.3])


def test_tokens_come_back_at_qps_and_never_above_the_burst() -> None:
    bucket = Bucket(qps=10, burst=2)
    bucket.take(0.0), bucket.take(0.0)
    assert bucket.take(0.1) == 0  # one token back after 1/qps
    assert bucket.take(100.0) == 0 and bucket.take(100.0) == 0  # a long quiet spell refills to the burst only
    assert bucket.take(100.0) == pytest.approx(0.1)


def test_over_a_long_run_the_rate_is_qps() -> None:
    bucket, now = Bucket(qps=50, burst=100), 0.0
    for _ in range(1100):
        now += bucket.take(now)
    assert now == pytest.approx(1000 / 50)  # the first 100 are the burst
