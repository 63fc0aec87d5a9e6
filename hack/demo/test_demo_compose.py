"""``make demo-compose``'s pure part: the edit of the example's weights, the ports, the commands it prints."""

from __future__ import annotations

import socket

import pytest
import yaml
from mlmodel_demo.compose import (
    PROJECT,
    STATE,
    Demo,
    down_command,
    pointers,
    port_taken,
    recreated_line,
    render_argv,
    taken_message,
    with_weights,
)
from mlmodel_testing.cluster import free_port
from mlmodel_testing.compose import EXAMPLE


def test_the_edit_sets_each_variants_weight_and_keeps_the_rest_of_the_file_as_written() -> None:
    text = EXAMPLE.read_text()
    edited = with_weights(text, {"stable": 0, "canary": 100})
    variants = yaml.safe_load(edited)["spec"]["variants"]
    assert [(v["name"], v["weight"]) for v in variants] == [("stable", 0), ("canary", 100)]
    changed = [(a, b) for a, b in zip(text.splitlines(), edited.splitlines(), strict=True) if a != b]
    assert changed == [("      weight: 90", "      weight: 0"), ("      weight: 10", "      weight: 100")]
    assert with_weights(edited, {"stable": 90, "canary": 10}) == text


def test_the_edit_refuses_a_variant_the_file_has_not() -> None:
    with pytest.raises(ValueError, match="could not set the weights stable=50,v3=50"):
        with_weights(EXAMPLE.read_text(), {"stable": 50, "v3": 50})


def test_a_port_something_listens_on_is_taken_and_the_message_says_what_to_do() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert port_taken(port)
    assert not port_taken(free_port())
    message = taken_message(8080, "router", "DEMO_COMPOSE_PORT")
    assert message.startswith("127.0.0.1:8080 is taken: something on this host listens on port 8080")
    assert message.endswith("make demo-compose DEMO_COMPOSE_PORT=8081")


def test_the_default_demo_is_removed_by_make_and_another_by_the_script() -> None:
    assert down_command(Demo()) == "make demo-compose-down"
    other = down_command(Demo(STATE.with_name(".demo-compose-e2e"), "mlmodel-e2e"))
    assert other == ".venv/bin/python hack/demo/demo_compose.py down --project mlmodel-e2e --state .demo-compose-e2e"


def test_the_pointers_are_commands_for_this_demo() -> None:
    text = pointers(Demo())
    lines = text.splitlines()
    assert lines[:3] == [
        f"It is running: Docker Compose project {PROJECT}, in .demo-compose/.",
        "  the router   http://127.0.0.1:8080",
        "  Prometheus   http://127.0.0.1:9090  (the router's requests per variant: "
        "sum by (variant) (rate(mlmodel_router_requests_total[1m])))",
    ]
    for command in (
        "curl -si http://127.0.0.1:8080/predict -H 'Content-Type: application/json'"
        " -d '{\"instances\": [[6.7, 3.0, 5.2, 2.3]]}'",
        ".venv/bin/mlmodel compose set-weight .demo-compose/compose.yaml stable=50 canary=50",
        ".venv/bin/mlmodel compose render .demo-compose/iris-canary-compose.yaml -o .demo-compose/compose.yaml"
        " --with-prometheus --prometheus-image mlmodel-prometheus:3.13.5",
        ".venv/bin/docker-compose -p mlmodel-demo -f .demo-compose/compose.yaml up -d --wait",
    ):
        assert f"  {command}" in lines, command
    assert lines[-1] == "Remove it all: make demo-compose-down"
    assert render_argv(Demo(port=8081))[-2:] == ["--port", "8081"]


def test_the_recreated_line_says_whether_a_move_recreated_a_container() -> None:
    assert recreated_line(4, []).startswith("No container was recreated: the same 4 containers served throughout")
    assert recreated_line(4, ["iris-router"]) == "Recreated by a move: iris-router."
