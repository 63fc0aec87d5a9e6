"""A 1,000-row V2 request in binary tensor data against the same request in JSON, side by side.

Starts our server (``--workers 1``, pinned to CPU 0) on the logreg model (30 features), then sends
the same rows alternately as a JSON V2 request and as a binary one (FP64 input, both outputs back
in binary) over one keep-alive connection from this process, pinned to CPU 1. Bodies are encoded
once up front, so the times are the server's work plus loopback transfer. Prints p50, p99 and
rows/s (at the median) for each encoding, and the ratio binary / JSON.

    .venv/bin/python bench/v2_binary.py                        # 200 requests each, under a minute
    .venv/bin/python bench/v2_binary.py --requests 500 --rows 1000
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time
from collections.abc import Sequence

import numpy as np
from harness import WORK, Server, exit_on_sigterm, free_port, model_rows, ours_argv, train_models
from report import fmt_ms, markdown_table

MODEL = "logreg"
PATH = f"/v2/models/{MODEL}/infer"
HEADER_LENGTH = "Inference-Header-Content-Length"


def json_request(rows: list[list[float]]) -> tuple[bytes, dict[str, str]]:
    """The rows as one FP64 tensor in JSON (full-precision floats, as ``json.dumps`` writes them)."""
    tensor = {"name": "input-0", "shape": [len(rows), len(rows[0])], "datatype": "FP64", "data": rows}
    return json.dumps({"inputs": [tensor]}).encode(), {"Content-Type": "application/json"}


def binary_request(rows: list[list[float]]) -> tuple[bytes, dict[str, str]]:
    """The rows as raw little-endian FP64 after the JSON header; every output asked for in binary."""
    raw = np.asarray(rows, dtype="<f8").tobytes()
    tensor = {
        "name": "input-0",
        "shape": [len(rows), len(rows[0])],
        "datatype": "FP64",
        "parameters": {"binary_data_size": len(raw)},
    }
    header = json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}}).encode()
    headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
    return header + raw, headers


def predictions(body: bytes, header_length: str | None) -> list[int]:
    """The ``predict`` output of a response, JSON or binary."""
    length = int(header_length) if header_length else len(body)
    header = json.loads(body[:length])
    output = header["outputs"][0]
    if "data" in output:
        return [int(v) for v in output["data"]]
    raw = body[length : length + output["parameters"]["binary_data_size"]]
    return [int(v) for v in np.frombuffer(raw, "<i8")]


def post(conn: http.client.HTTPConnection, body: bytes, headers: dict[str, str]) -> tuple[float, bytes, str | None]:
    """One request: seconds from send to the last byte read, the body, its header length."""
    started = time.perf_counter()
    conn.request("POST", PATH, body, headers)
    reply = conn.getresponse()
    data = reply.read()
    elapsed = time.perf_counter() - started
    if reply.status != 200:
        raise RuntimeError(f"{reply.status}: {data[:300]!r}")
    return elapsed, data, reply.getheader(HEADER_LENGTH)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000, help="rows per request (default 1000)")
    parser.add_argument("--requests", type=int, default=200, help="measured requests per encoding (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured requests per encoding first")
    parser.add_argument("--server-cpu", default="0", help="CPU list for the server (taskset -c)")
    parser.add_argument("--client-cpu", type=int, default=1, help="CPU for this process, the client")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.requests < 1 or args.warmup < 0:
        parser.error("--rows and --requests must be positive, --warmup not negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    path, sha256 = train_models(WORK / "models")[MODEL]
    rows = model_rows(MODEL, args.rows)
    encodings = {"JSON": json_request(rows), "binary": binary_request(rows)}
    port = free_port()
    argv_ = ["taskset", "-c", args.server_cpu, *ours_argv(MODEL, path, sha256, port, workers=1)]
    server = Server("ours", argv_, "/readyz", WORK / "logs" / "v2-binary.log", port)
    os.sched_setaffinity(0, {args.client_cpu})
    times: dict[str, list[float]] = {name: [] for name in encodings}
    try:
        server.start()
        server.wait_ready()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        first = {name: post(conn, *request) for name, request in encodings.items()}
        if predictions(*first["JSON"][1:]) != predictions(*first["binary"][1:]):
            raise RuntimeError("the JSON and binary answers differ")
        for i in range(args.warmup + args.requests):
            for name, request in encodings.items():  # alternate, so drift in the machine hits both alike
                elapsed = post(conn, *request)[0]
                if i >= args.warmup:
                    times[name].append(elapsed)
        conn.close()
    finally:
        server.stop()

    table = []
    p50s = {}
    for name, samples in times.items():
        samples.sort()
        p50s[name] = samples[len(samples) // 2]
        p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
        sizes = f"{len(encodings[name][0]):,} / {len(first[name][1]):,}"
        table.append([name, sizes, fmt_ms(p50s[name] * 1000), fmt_ms(p99 * 1000), f"{args.rows / p50s[name]:,.0f}"])
    print(f"{args.rows}-row V2 request to {MODEL} (30 features), {args.requests} each, alternating, 1 connection:")
    print(markdown_table(["encoding", "request / response bytes", "p50", "p99", "rows/s at p50"], table))
    print(f"binary / JSON: {p50s['JSON'] / p50s['binary']:.2f}x rows/s (p50 {fmt_ms(p50s['JSON'] * 1000)} / ", end="")
    print(f"{fmt_ms(p50s['binary'] * 1000)}); load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
