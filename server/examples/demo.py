"""``make demo-local``: train the example iris model, serve it with mlmodel-server, show live predictions.

Each step prints the equivalent curl command and the server's real answer. The server
is stopped with SIGTERM at the end (a graceful drain); pass ``--keep`` to leave it up.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[2]
ROW = [5.1, 3.5, 1.4, 0.2]
NAMED = {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3}


def show(base: str, method: str, path: str, body: Any = None) -> Any:
    """Send one request, printing it as curl and the answer as it came."""
    data = None if body is None else json.dumps(body)
    curl = f"curl -s {'-X POST ' if method == 'POST' else ''}{base}{path}"
    if data is not None:
        curl += f" -H 'Content-Type: application/json' -d '{data}'"
    print(f"\n$ {curl}")
    reply = requests.request(method, base + path, data=data, headers={"Content-Type": "application/json"}, timeout=10)
    print(
        f"HTTP {reply.status_code}  X-Model-Name={reply.headers.get('X-Model-Name')}  "
        f"X-Request-Id={reply.headers.get('X-Request-Id')}"
    )
    print(reply.text.strip())
    return reply


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=REPO / ".demo")
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEMO_PORT", "8080")))
    parser.add_argument("--keep", action="store_true", help="leave the server running")
    args = parser.parse_args()

    print("==> training the example model (iris RandomForest, 100 trees, depth 3)")
    trained = subprocess.run(
        [sys.executable, str(REPO / "server/examples/train_models.py"), "--out", str(args.workdir), "--only", "iris"],
        check=True,
        capture_output=True,
        text=True,
    )
    model = json.loads(trained.stdout.splitlines()[0])
    print(f"    {model['path']}  sha256={model['sha256']}")

    server_bin = Path(sys.executable).with_name("mlmodel-server")
    command = [
        str(server_bin),
        "--model-uri",
        f"file://{model['path']}",
        "--model-sha256",
        model["sha256"],
        "--model-name",
        "iris",
        "--port",
        str(args.port),
        "--workers",
        "1",
    ]
    print(f"==> starting: {' '.join(command)}")
    log = (args.workdir / "server.log").open("wb")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{args.port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                print(f"server exited ({server.returncode}); log: {log.name}", file=sys.stderr)
                return 1
            try:
                if requests.get(base + "/readyz", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                print(f"server not ready in 60 s; log: {log.name}", file=sys.stderr)
                return 1
            time.sleep(0.1)
        print(f"==> ready at {base}")
        show(base, "POST", "/predict", {"features": [ROW]})
        show(base, "POST", "/predict", {"instances": [NAMED]})
        show(base, "POST", "/v1/models/iris:predict", {"instances": [ROW]})
        show(
            base,
            "POST",
            "/v2/models/iris/infer",
            {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": ROW}]},
        )
        show(base, "GET", "/model-info")
        bad = show(base, "POST", "/predict", {"features": [[5.1, 3.5, 1.4]]})
        assert bad.status_code == 400
        if args.keep:
            print(f"\n==> the server keeps running (pid {server.pid}); stop it with: kill {server.pid}")
            return 0
    finally:
        if not args.keep and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
            print(f"\n==> server stopped; its JSON log is in {log.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
