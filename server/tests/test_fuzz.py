"""Fuzz the V2 decoder, binary part included: only 4xx domain errors, never a 5xx, a hang or a dead worker."""

from __future__ import annotations

from typing import Any

import orjson
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlmodel_server import errors, tensors, v2
from mlmodel_server.protocol import Schema

from conftest import IRIS_FEATURES, Server

SCHEMA = Schema(n_features=4, feature_names=tuple(IRIS_FEATURES), allow_nan=False, max_rows=8, has_proba=True)
DATATYPES = [*tensors.NUMERIC_DTYPES, "BYTES", "FP8", ""]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=20,
)


def _rarely(draw: st.DrawFn) -> bool:
    """True one time in ten, and False when shrunk."""
    return draw(st.sampled_from([False] * 9 + [True]))


@st.composite
def tensor(draw: st.DrawFn, name: str) -> tuple[dict[str, Any], bytes]:
    """A tensor that is nearly right, JSON or binary, and its binary data; now and then a part is off."""
    rows, cols = draw(st.integers(0, 10)), 4 if not _rarely(draw) else draw(st.integers(0, 5))
    shape: Any = [rows, cols] if name == "input-0" else [rows]
    datatype: Any = draw(st.sampled_from(list(tensors.NUMERIC_DTYPES)))
    out: dict[str, Any] = {"name": name, "shape": shape, "datatype": datatype}
    for key in list(out):
        if _rarely(draw):
            out[key] = draw(st.sampled_from(["BYTES", "FP8", "", [rows, cols, 1]]) | json_values)
    count = rows * (cols if name == "input-0" else 1)
    if draw(st.booleans()):
        size: Any = count * tensors.NUMERIC_DTYPES[datatype].itemsize
        blob = draw(st.binary(min_size=size, max_size=size))
        if _rarely(draw):
            size = draw(st.sampled_from([size + 1, size - 1, 0, 10**12]) | json_values)
        out["parameters"] = {"binary_data_size": size}
        return out, blob
    out["data"] = draw(st.lists(st.floats() | st.integers(-(2**63), 2**64 - 1), min_size=count, max_size=count))
    if _rarely(draw):
        out["data"] = draw(st.lists(scalars, max_size=count + 1) | json_values)
    return out, b""


@st.composite
def request(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A V2 body and its Inference-Header-Content-Length (None: plain JSON)."""
    names = draw(st.sampled_from([["input-0"], IRIS_FEATURES, IRIS_FEATURES[:3], ["input-0", "input-0"]]))
    drawn = [draw(tensor(name)) for name in names]
    header: dict[str, Any] = {"inputs": [t for t, _ in drawn] if not _rarely(draw) else draw(json_values)}
    if draw(st.booleans()):
        header["outputs"] = draw(
            st.lists(st.fixed_dictionaries({"name": st.sampled_from(v2.OUTPUTS) | json_values}), max_size=3)
            | json_values
        )
    if draw(st.booleans()):
        header["parameters"] = draw(st.fixed_dictionaries({"binary_data_output": st.booleans() | json_values}))
    json_part = orjson.dumps(header)
    binary = b"".join(blob for _, blob in drawn)
    if _rarely(draw):
        binary = draw(st.binary(max_size=400))
    length = str(len(json_part)) if binary or draw(st.booleans()) else None
    if _rarely(draw):
        length = draw(
            st.sampled_from(["0", "-3", "x", "", str(len(json_part) + 7), "99999999999999999999"])
            | st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=4)  # what HTTP carries
        )
    return json_part + binary, length


def test_the_decoder_raises_only_client_errors() -> None:
    @settings(max_examples=400, deadline=None, database=None)
    @given(request())
    def decode(body: tuple[bytes, str | None]) -> None:
        try:
            v2.decode(*v2.split_body(*body, 1 << 20), SCHEMA)
        except errors.ServerError as err:
            assert errors.status_for(err) == 400, err

    decode()


def test_the_server_answers_every_request_with_a_4xx_or_a_result(iris_server: Server) -> None:
    session = requests.Session()
    content_types = st.sampled_from([None, "application/json", "application/octet-stream", "text/plain"])

    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(request(), content_types)
    def post(body: tuple[bytes, str | None], content_type: str | None) -> None:
        data, length = body
        headers = {"Content-Type": content_type} if content_type else {}
        if length is not None:
            headers["Inference-Header-Content-Length"] = length
        reply = session.post(iris_server.url + "/v2/models/iris/infer", data=data, headers=headers, timeout=10)
        assert reply.status_code in (200, 400, 415), reply.text
        if reply.status_code != 200:
            assert isinstance(reply.json()["error"], str)

    post()
    log = iris_server.logs()  # this test's lines: a worker booted again would have died
    assert iris_server.proc.poll() is None and "Booting worker" not in log, log
    assert '"level":"error"' not in log and "Traceback" not in log, log
