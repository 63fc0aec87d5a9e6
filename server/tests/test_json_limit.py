"""JSON bodies: held to --max-json-bytes, and decoded within 5x their size in memory."""

from __future__ import annotations

import functools
import random
import tracemalloc
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from mlmodel_server import protocol

LIMIT = 1 << 20
SCHEMA = protocol.Schema(n_features=4, feature_names=None, allow_nan=False, max_rows=1_000_000, has_proba=False)


@functools.cache  # 230,000 random floats to build: once per field
def _body_near(limit: int, field: str) -> bytes:
    """``{field: rows}`` of short floats, the costliest kind per byte, just under ``limit`` bytes."""
    rng = random.Random(1)
    row = 18  # "[d.d,d.d,d.d,d.d],"
    rows = [[round(rng.uniform(0, 7), 1) for _ in range(4)] for _ in range((limit - 32) // row)]
    body = orjson.dumps({field: rows})
    assert limit * 0.9 < len(body) <= limit
    return body


@pytest.mark.parametrize(
    ("field", "decode"), [("features", protocol.decode_predict), ("instances", protocol.decode_v1)]
)
def test_peak_memory_per_request_is_within_5x_the_body(field: str, decode: Callable[..., Any]) -> None:
    body = _body_near(LIMIT, field)
    tracemalloc.start()
    try:
        x = decode(protocol.parse_json(body, LIMIT, protocol.ROWS_FIELDS), SCHEMA)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert x.shape[1] == 4 and x.shape[0] == len(orjson.loads(body)[field])
    assert x.tolist() == orjson.loads(body)[field]
    assert peak <= 5 * len(body), f"decoding a {len(body)}-byte body peaked at {peak} bytes"


def test_a_json_body_over_the_limit_is_413_naming_the_limit(make_client: Callable[..., Any]) -> None:
    client = make_client(max_json_bytes=LIMIT)
    body = _body_near(LIMIT, "features") + b" " * (LIMIT // 8)  # still under the 10 MiB --max-body-bytes
    for path in ("/predict", "/v1/models/iris:predict", "/v2/models/iris/infer"):
        for headers in ({}, {"Transfer-Encoding": "chunked"}):  # the lane, then Flask
            response = client.post(path, data=body, content_type="application/json", headers=headers)
            assert response.status_code == 413, (path, headers)
            reply = response.get_json()
            code, message = (reply["code"], reply["error"]) if path != "/predict" else reply["error"].values()
            assert code == "payload_too_large"
            assert "1048576 bytes (--max-json-bytes)" in message


def test_a_binary_v2_body_keeps_the_body_limit(make_client: Callable[..., Any]) -> None:
    client = make_client(max_json_bytes=64)
    header = orjson.dumps(
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "parameters": {"binary_data_size": 32}}]}
    )
    assert len(header) > 64
    response = client.post(
        "/v2/models/iris/infer",
        data=header + bytes(32),
        content_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 413  # the JSON header is held to the JSON limit...
    client = make_client(max_json_bytes=len(header))
    response = client.post(
        "/v2/models/iris/infer",
        data=header + bytes(32),
        content_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 200, response.get_data(as_text=True)  # ...the tensor data only to the body's
