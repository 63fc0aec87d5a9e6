"""The batcher: results match, concurrency coalesces, failures stay with their request."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from mlmodel_server.batching import Batcher
from mlmodel_server.model import Prediction


class Recorder:
    """A predict function that doubles its input, records batch sizes, and can be held."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()

    def __call__(self, x: np.ndarray, want_proba: bool) -> Prediction:
        self.entered.set()
        self.release.wait(10)
        if (x < 0).any():
            raise ValueError("negative")
        self.sizes.append(len(x))
        return Prediction(x[:, 0] * 2, x if want_proba else None)


def _submit(batcher: Batcher, x: np.ndarray, want_proba: bool = False) -> Prediction:
    with batcher.arrival() as ticket:
        return batcher.submit(ticket, x, want_proba=want_proba)


def test_alone_a_request_runs_at_once() -> None:
    recorder = Recorder()
    batcher = Batcher(recorder, max_rows=100, max_wait_s=5.0)
    result = _submit(batcher, np.array([[1.0], [2.0]]), want_proba=True)
    assert result.predictions.tolist() == [2.0, 4.0]
    assert result.probabilities is not None
    assert recorder.sizes == [2]


def test_concurrent_requests_share_calls_and_get_their_own_rows() -> None:
    recorder = Recorder()
    recorder.release.clear()
    batcher = Batcher(recorder, max_rows=1000, max_wait_s=0.0)
    with ThreadPoolExecutor(max_workers=16) as pool:
        first = pool.submit(_submit, batcher, np.array([[0.5]]))
        assert recorder.entered.wait(10)  # the first call is running: the rest must queue
        rest = [pool.submit(_submit, batcher, np.array([[float(i)], [float(i) + 0.25]])) for i in range(15)]
        while len(batcher._queue) < 15:
            threading.Event().wait(0.001)
        recorder.release.set()
        assert first.result().predictions.tolist() == [1.0]
        for i, future in enumerate(rest):
            assert future.result().predictions.tolist() == [2.0 * i, 2.0 * i + 0.5]
    assert recorder.sizes == [1, 30]


def test_batches_never_exceed_max_rows() -> None:
    recorder = Recorder()
    recorder.release.clear()
    batcher = Batcher(recorder, max_rows=4, max_wait_s=0.0)
    with ThreadPoolExecutor(max_workers=8) as pool:
        first = pool.submit(_submit, batcher, np.ones((1, 1)))
        assert recorder.entered.wait(10)
        rest = [pool.submit(_submit, batcher, np.ones((3, 1))) for _ in range(4)]
        while len(batcher._queue) < 4:
            threading.Event().wait(0.001)
        recorder.release.set()
        for future in [first, *rest]:
            future.result()
    assert max(recorder.sizes) <= 4
    assert sum(recorder.sizes) == 13


def test_a_failing_request_does_not_fail_its_batch() -> None:
    recorder = Recorder()
    recorder.release.clear()
    batcher = Batcher(recorder, max_rows=100, max_wait_s=0.0)
    with ThreadPoolExecutor(max_workers=4) as pool:
        first = pool.submit(_submit, batcher, np.ones((1, 1)))
        assert recorder.entered.wait(10)
        good = pool.submit(_submit, batcher, np.full((1, 1), 3.0))
        bad = pool.submit(_submit, batcher, np.full((1, 1), -1.0))
        while len(batcher._queue) < 2:
            threading.Event().wait(0.001)
        recorder.release.set()
        assert first.result().predictions.tolist() == [2.0]
        assert good.result().predictions.tolist() == [6.0]
        with pytest.raises(ValueError, match="negative"):
            bad.result()


def test_an_abandoned_arrival_does_not_hold_the_leader() -> None:
    batcher = Batcher(Recorder(), max_rows=10, max_wait_s=30.0)
    with pytest.raises(RuntimeError), batcher.arrival():
        raise RuntimeError("decoding failed")
    assert batcher._arriving == 0
    assert _submit(batcher, np.ones((1, 1))).predictions.tolist() == [2.0]


def test_many_threads_all_get_correct_answers() -> None:
    batcher = Batcher(Recorder(), max_rows=64, max_wait_s=0.001)
    inputs = [np.array([[float(i)]]) for i in range(400)]
    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(lambda x: _submit(batcher, x), inputs))
    assert [r.predictions.tolist() for r in results] == [[2.0 * i] for i in range(400)]


def test_threads_follow_the_cost_of_a_model_call() -> None:
    from mlmodel_server.batching import threads_for

    assert threads_for(0.006, 0.007) == 16  # a forest: 16 rows cost about what one does
    assert threads_for(0.0001, 0.0001) == 2  # a linear model: HTTP costs more than the model
    assert threads_for(0.002, 0.03) == 2  # costly, but the cost grows with the rows: no gain in sharing


def test_a_direct_batcher_calls_the_model_for_each_request() -> None:
    recorder = Recorder()
    recorder.release.clear()
    batcher = Batcher(recorder, max_rows=1000, max_wait_s=1.0, direct=True)
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(_submit, batcher, np.array([[float(i)]])) for i in range(4)]
        assert recorder.entered.wait(10)
        recorder.release.set()
        assert [f.result().predictions.tolist() for f in futures] == [[2.0 * i] for i in range(4)]
    assert recorder.sizes == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="negative"):
        _submit(batcher, np.array([[-1.0]]))
