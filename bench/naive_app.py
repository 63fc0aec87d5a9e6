"""The baseline: the model server exactly as the Flask tutorials write it.

Flask's development server (threaded by default), the model loaded at import
time, ``np.array`` on the JSON body, ``predict`` plus ``predict_proba``, and
``jsonify``. Nothing clever; ``bench/run.py`` compares our server with it.

Run it by hand::

    MODEL_PATH=.bench/models/iris.joblib .venv/bin/python bench/naive_app.py --port 5000
    curl -s -X POST localhost:5000/predict -H 'Content-Type: application/json' \\
        -d '{"features": [[5.1, 3.5, 1.4, 0.2]]}'

The model path comes from ``--model`` or the ``MODEL_PATH`` environment variable.
"""

from __future__ import annotations

import argparse
import os
import sys

import joblib
import numpy as np
from flask import Flask, Response, jsonify, request


def _arg(name: str, default: str | None) -> str | None:
    """Tiny argv lookup so the model can be loaded at import time, as tutorials do."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(f"--{name}", default=default)
    known, _ = parser.parse_known_args(sys.argv[1:])
    value = getattr(known, name)
    return None if value is None else str(value)


MODEL_PATH = _arg("model", os.environ.get("MODEL_PATH"))
if not MODEL_PATH:
    sys.exit("naive_app: set MODEL_PATH or pass --model PATH")

app = Flask(__name__)
model = joblib.load(MODEL_PATH)


@app.route("/predict", methods=["POST"])
def predict() -> Response:
    data = request.get_json()
    features = np.array(data["features"] if "features" in data else data["instances"])
    predictions = model.predict(features)
    probabilities = model.predict_proba(features)
    return jsonify({"predictions": predictions.tolist(), "probabilities": probabilities.tolist()})


@app.route("/health", methods=["GET"])
def health() -> Response:
    return jsonify({"status": "ok"})


if __name__ == "__main__":
    app.run(
        host=_arg("host", "127.0.0.1") or "127.0.0.1",
        port=int(_arg("port", "5000") or 5000),
    )
