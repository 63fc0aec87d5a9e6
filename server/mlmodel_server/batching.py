"""Adaptive batching: concurrent requests share one model call.

There is no batching thread. The first request to find the model idle becomes the
leader and runs the call itself, taking with it every request queued by then (up to
``max_rows``). Requests that arrive while the model runs wait, and the oldest of them
leads the next call. With no concurrency a request runs at once, with no hand-off.
While other requests are still being decoded, a leader waits up to ``max_wait`` for
them to join, so that a burst becomes one call rather than two. For a model cheaper than
``COSTLY_CALL_S`` a call, batching cannot pay for its bookkeeping: a direct batcher calls
the model at once for every request.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from mlmodel_server.model import Prediction

PredictFn = Callable[[np.ndarray, bool], Prediction]

PROBE_ROWS = 16
COSTLY_CALL_S = 0.0005


def threads_for(one_row_s: float, probe_rows_s: float) -> int:
    """Request threads per worker when ``--threads`` is not given.

    Threads pay only where requests can share a model call that costs more than the HTTP
    around it: then 16 threads let 16 requests coalesce into one call. For a cheap model, or
    one whose cost grows with its rows, extra threads only contend for the GIL and stretch
    the latency tail (``bench/run.py``, logistic regression at 16 connections: p99 15.6 ms
    with 2 threads against 40.5 ms with 16), so 2.
    """
    if one_row_s >= COSTLY_CALL_S and probe_rows_s < PROBE_ROWS / 2 * one_row_s:
        return 16
    return 2


@dataclass
class _Job:
    x: np.ndarray
    want_proba: bool
    done: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    result: Prediction | None = None
    error: BaseException | None = None


@dataclass
class Ticket:
    """A request that has arrived and will submit rows soon; see ``Batcher.arrival``."""

    submitted: bool = False


class Batcher:
    """Coalesces concurrent ``submit`` calls into calls of ``predict``; with ``direct``, calls it for each."""

    def __init__(self, predict: PredictFn, *, max_rows: int, max_wait_s: float, direct: bool = False) -> None:
        self._predict = predict
        self.direct = direct
        self._max_rows = max_rows
        self._max_wait_s = max_wait_s
        self._cond = threading.Condition()
        self._queue: deque[_Job] = deque()
        self._busy = False
        self._arriving = 0

    @contextmanager
    def arrival(self) -> Iterator[Ticket]:
        """Count a request as arriving while it is read and decoded."""
        ticket = Ticket()
        if self.direct:
            yield ticket
            return
        with self._cond:
            self._arriving += 1
        try:
            yield ticket
        finally:
            if not ticket.submitted:
                with self._cond:
                    self._arriving -= 1
                    self._cond.notify_all()

    def submit(self, ticket: Ticket, x: np.ndarray, *, want_proba: bool) -> Prediction:
        """Predict ``x``, possibly in one call with other requests' rows."""
        if self.direct:
            return self._predict(x, want_proba)
        job = _Job(x, want_proba)
        with self._cond:
            ticket.submitted = True
            self._arriving -= 1
            self._queue.append(job)
            if self._busy:
                self._cond.notify_all()
            else:
                self._busy = job.lead = True
        if not job.lead:
            job.done.wait()
        if job.lead:
            self._lead(job)
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def _lead(self, me: _Job) -> None:
        while True:
            batch = self._next_batch()
            self._run(batch)
            with self._cond:
                if me.result is None and me.error is None:
                    continue
                if self._queue:
                    successor = self._queue[0]
                    successor.lead = True
                    successor.done.set()
                else:
                    self._busy = False
                return

    def _next_batch(self) -> list[_Job]:
        with self._cond:
            deadline = time.monotonic() + self._max_wait_s
            while self._arriving and self._queued_rows() < self._max_rows:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._cond.wait(remaining):
                    break
            batch = [self._queue.popleft()]
            rows = len(batch[0].x)
            while self._queue and rows + len(self._queue[0].x) <= self._max_rows:
                rows += len(self._queue[0].x)
                batch.append(self._queue.popleft())
            return batch

    def _queued_rows(self) -> int:
        return sum(len(job.x) for job in self._queue)

    def _run(self, batch: list[_Job]) -> None:
        try:
            x = batch[0].x if len(batch) == 1 else np.concatenate([job.x for job in batch])
            prediction = self._predict(x, any(job.want_proba for job in batch))
        except Exception as err:  # noqa: BLE001 - handed to the request that owns it
            if len(batch) == 1:
                batch[0].error = err
            else:
                for job in batch:  # one bad request must not fail the others
                    self._run([job])
                return
        else:
            start = 0
            for job in batch:
                job.result = prediction.rows(start, start + len(job.x))
                start += len(job.x)
        for job in batch:
            if not job.lead:
                job.done.set()
