"""The weights endpoint routers long-poll (``weights.server``), on loopback."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from mlmodel_operator import names, weights
from mlmodel_operator.router import traffic

OWNER = ("ml", "iris")
ADDRESSES = {"stable": "10.96.0.10:80", "canary": "10.96.0.11:80"}
ONE = traffic.routing_document(traffic.Routes({"stable": 90, "canary": 10}, ADDRESSES), 1)
TWO = traffic.routing_document(traffic.Routes({"stable": 50, "canary": 50}, ADDRESSES), 2)


@pytest.fixture
def endpoint() -> Iterator[tuple[weights.Board, str]]:
    board = weights.Board()
    server = weights.server(board, 0, "127.0.0.1")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield board, f"http://127.0.0.1:{server.server_address[1]}{names.WEIGHTS_PATH}"
    finally:
        server.shutdown()
        server.server_close()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_a_poll_is_answered_at_once_when_the_router_is_behind_and_when_the_weights_move(
    endpoint: tuple[weights.Board, str],
) -> None:
    board, base = endpoint
    board.publish(OWNER, ONE)
    assert _get(f"{base}/ml/iris?serial=-1&wait=5") == (200, ONE)
    answered: list[tuple[float, tuple[int, str]]] = []
    start = time.monotonic()
    url = f"{base}/ml/iris?serial=1&wait=20"
    poll = threading.Thread(target=lambda: answered.append((time.monotonic(), _get(url))))
    poll.start()
    time.sleep(0.5)
    assert not answered  # held: the router has the latest
    board.publish(OWNER, TWO)
    poll.join(5)
    assert answered and answered[0][1] == (200, TWO)
    assert answered[0][0] - start < 1.5
    # Held for ``wait`` seconds at most, then the same document again.
    start = time.monotonic()
    assert _get(f"{base}/ml/iris?serial=2&wait=0.3") == (200, TWO)
    assert 0.3 <= time.monotonic() - start < 2


def test_unknown_names_bad_queries_and_a_deleted_modeldeployment_are_json_errors(
    endpoint: tuple[weights.Board, str],
) -> None:
    board, base = endpoint
    status, body = _get(f"{base}/ml/nope?serial=1&wait=0")
    assert status == 404 and "no weights for ml/nope" in json.loads(body)["error"]
    assert _get(f"{base}/ml/iris?serial=one")[0] == 400
    assert _get(base.replace(names.WEIGHTS_PATH, "/v1/other/ml/iris"))[0] == 404
    board.publish(OWNER, ONE)
    board.publish(OWNER, None)
    assert _get(f"{base}/ml/iris?serial=-1")[0] == 404


def test_a_poll_for_a_modeldeployment_with_no_document_yet_is_held_until_one_is_published(
    endpoint: tuple[weights.Board, str],
) -> None:
    """A new leader has no document before its first pass: the router's poll waits for it, not a tight loop of 404s."""
    board, base = endpoint
    answered: list[tuple[int, str]] = []
    poll = threading.Thread(target=lambda: answered.append(_get(f"{base}/ml/iris?serial=1&wait=20")))
    poll.start()
    time.sleep(0.3)
    assert not answered
    board.publish(OWNER, TWO)
    poll.join(5)
    assert answered == [(200, TWO)]


def test_each_poll_reports_its_pods_serial_and_the_listener_hears_a_pod_come_up_to_date(
    endpoint: tuple[weights.Board, str],
) -> None:
    heard: list[tuple[str, str]] = []
    board = weights.Board(listener=heard.append)
    board.publish(OWNER, ONE)
    board.report(OWNER, "router-a", 1, False)  # behind: an address out of reach
    board.report(OWNER, "router-b", 0, True)  # behind: an older serial
    assert heard == []
    board.report(OWNER, "router-a", 1, True)
    board.report(OWNER, "router-a", 1, True)  # the same again: heard once
    assert heard == [OWNER]
    assert board.reports(OWNER) == {"router-a": (1, True), "router-b": (0, True)}
    board.publish(OWNER, None)
    assert board.reports(OWNER) == {}
    # Through the endpoint: the poll's pod and reached.
    endpoint_board, base = endpoint
    endpoint_board.publish(OWNER, ONE)
    assert _get(f"{base}/ml/iris?serial=1&wait=0&pod=iris-router-x&reached=1") == (200, ONE)
    assert endpoint_board.reports(OWNER) == {"iris-router-x": (1, True)}


def test_routers_that_connect_together_are_all_queued_while_the_endpoint_is_busy() -> None:
    """200 connections at once, none accepted yet (the endpoint busy answering the polls the weights released): every
    one completes its handshake at once, where a backlog of 5 would leave the rest to a SYN retried after 1 s."""
    server = weights.server(weights.Board(), 0, "127.0.0.1")
    try:
        address = ("127.0.0.1", server.server_address[1])
        connections = [socket.create_connection(address, timeout=0.5) for _ in range(200)]
        for connection in connections:
            connection.close()
    finally:
        server.server_close()


def test_resolve_gives_an_address_and_names_a_bad_one() -> None:
    assert weights.resolve("localhost:8082")[1] == 8082
    assert weights.resolve("127.0.0.1:8082") == ("127.0.0.1", 8082)
    with pytest.raises(ValueError, match="not host:port"):
        weights.resolve("mlmodel-operator")
