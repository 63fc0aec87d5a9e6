"""A gthread worker that reads each request in its event loop and hands only complete ones to a thread.

gunicorn's gthread worker gives a connection to a thread as soon as it is readable; the thread then
reads the request with blocking reads, so a few clients that send half a request hold every thread
(issue 23, finding 4). Here the worker's own selector loop reads the request with non-blocking
``recv`` until its head and body are complete, under a header deadline and a body idle timeout; then
the bytes are given to gunicorn's parser and the request to the pool. No extra hop (an async proxy in
front would add one per request) and no copy beyond the buffer the parser would have filled anyway.

Memory is bounded twice: a body is buffered up to the largest one the server accepts (a bigger one is
handed on as soon as its head announces it, for the app's 413), and what a worker buffers past the
first ``SMALL_BYTES`` of each request up to ``budget``. A request that would pass the budget is not
read from (TCP holds its sender back) until others free their share, or until its idle timeout.
"""

from __future__ import annotations

import selectors
import time
from collections import deque
from functools import partial
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

HEADER_TIMEOUT_S = 10.0
BODY_IDLE_TIMEOUT_S = 30.0
MAX_HEAD_BYTES = 64 * 1024
SMALL_BYTES = 64 * 1024
"""Every request may buffer this much whatever the budget: a small request never waits for a large one."""
BUDGET_BODIES = 4
"""Past their first ``SMALL_BYTES``, a worker buffers this many largest bodies at once (or 64 MiB if more)."""
_RECV = 64 * 1024


def _body_needed(head: bytes) -> int | None:
    """Bytes of body the head announces; None for a chunked body (complete at its last chunk)."""
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"transfer-encoding" and b"chunked" in value.lower():
            return None
        if name == b"content-length" and value.strip().isdigit():
            length = int(value.strip())
    return length


def _chunked_complete(buf: bytearray, start: int) -> bool:
    """Whether the chunked body from ``start`` has arrived whole: its last chunk and the trailer's end."""
    pos = start
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            return False
        size_text = bytes(buf[pos:line_end]).split(b";", 1)[0].strip()
        if not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
            return True  # not chunked encoding: gunicorn's parser refuses it
        size = int(size_text, 16)
        if size == 0:
            return buf.find(b"\r\n\r\n", line_end) >= 0
        pos = line_end + 2 + size + 2


class _Reading:
    """A connection whose request is still arriving."""

    __slots__ = ("buf", "conn", "deadline", "head_end", "needed")

    def __init__(self, conn: Any, deadline: float) -> None:
        self.conn = conn
        self.buf = bytearray()
        self.deadline = deadline
        self.head_end = -1
        self.needed: int | None = 0  # bytes of body the head announces, once it is in; None: chunked


class BufferingWorker(ThreadWorker):  # type: ignore[misc]
    """``ThreadWorker`` whose threads only ever see a complete request already in memory."""

    header_timeout = HEADER_TIMEOUT_S
    body_idle_timeout = BODY_IDLE_TIMEOUT_S
    max_body_bytes = 10 * 1024 * 1024
    budget = 64 * 1024 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reading: deque[_Reading] = deque()
        self.paused: deque[_Reading] = deque()
        self.buffered = 0

    def enqueue_req(self, conn: Any) -> None:
        if conn.parser is not None and conn.parser.unreader.buf.getvalue():
            super().enqueue_req(conn)  # pipelined bytes already read: the parser has them
            return
        conn.sock.setblocking(False)
        state = _Reading(conn, time.monotonic() + self.header_timeout)
        self.reading.append(state)
        self._watch(state)

    def _watch(self, state: _Reading) -> None:
        self.poller.register(state.conn.sock, selectors.EVENT_READ, partial(self._on_readable, state))

    def _on_readable(self, state: _Reading, _sock: Any) -> None:
        if len(state.buf) >= SMALL_BYTES and self.buffered + _RECV > self.budget:
            self.poller.unregister(state.conn.sock)
            self.paused.append(state)
            return
        try:
            data = state.conn.sock.recv(_RECV)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(state)
            return
        state.buf += data
        if len(state.buf) > SMALL_BYTES:
            self.buffered += min(len(data), len(state.buf) - SMALL_BYTES)
        if state.head_end < 0:
            state.head_end = state.buf.find(b"\r\n\r\n")
            if state.head_end < 0:
                if len(state.buf) > MAX_HEAD_BYTES:
                    self._hand_over(state)  # gunicorn's parser refuses it with its 4xx
                return
            state.head_end += 4
            state.needed = _body_needed(bytes(state.buf[: state.head_end]))
        if self._complete(state):
            self._hand_over(state)
        else:
            state.deadline = time.monotonic() + self.body_idle_timeout

    def _complete(self, state: _Reading) -> bool:
        needed = state.needed
        if needed is None:
            return _chunked_complete(state.buf, state.head_end) or len(state.buf) - state.head_end > self.max_body_bytes
        return len(state.buf) - state.head_end >= needed or needed > self.max_body_bytes

    def _forget(self, state: _Reading) -> None:
        if state in self.paused:
            self.paused.remove(state)
        else:
            self.poller.unregister(state.conn.sock)
        self.reading.remove(state)
        self.buffered -= max(len(state.buf) - SMALL_BYTES, 0)
        while self.paused and self.buffered + _RECV <= self.budget:
            self._watch(self.paused.popleft())

    def _hand_over(self, state: _Reading) -> None:
        self._forget(state)
        conn = state.conn
        conn.data_ready = True
        conn.init()
        conn.parser.unreader.unread(bytes(state.buf))
        super().enqueue_req(conn)

    def _drop(self, state: _Reading) -> None:
        self._forget(state)
        self.nr_conns -= 1
        state.conn.close()

    def _keepalive_after(self, conn: Any, keepalive: bool) -> bool:
        """gthread's, but a body the app did not read (a 413 or 401 answered first) is discarded whole: it is
        in memory already. gthread drains at most 64 KiB and otherwise closes the connection after a reply that
        announced keep-alive, and the router's next request on it fails (pinned gunicorn: a private hook)."""
        if not keepalive:
            return False
        deadline = time.monotonic() + self.body_idle_timeout
        return bool(conn.parser.finish_body(deadline=deadline, max_bytes=self.max_body_bytes))

    def murder_keepalived(self, force: bool = False) -> None:
        super().murder_keepalived(force)
        now = time.monotonic()
        for state in [s for s in self.reading if force or s.deadline <= now]:
            self._drop(state)


def buffering(max_body_bytes: int) -> type[BufferingWorker]:
    """The worker class for a server that accepts bodies up to ``max_body_bytes``."""
    attrs = {"max_body_bytes": max_body_bytes, "budget": max(BUDGET_BODIES * max_body_bytes, 64 * 1024 * 1024)}
    return type("BufferingWorker", (BufferingWorker,), attrs)
