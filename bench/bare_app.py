"""The ceiling: a bare Flask app that parses the JSON body and returns a constant answer.

No model, no metrics, no logging beyond gunicorn's defaults: what Flask under gunicorn
can do on its own. ``bench/ceiling.py`` runs it with the same gunicorn settings as our
server; the answer has the shape of ours for one row of a model with ``BARE_CLASSES``
classes (default 3)::

    BARE_CLASSES=3 .venv/bin/gunicorn -k gthread --threads 2 -w 1 --chdir bench bare_app:app
"""

from __future__ import annotations

import os

from flask import Flask, Response, jsonify, request

CLASSES = int(os.environ.get("BARE_CLASSES", "3"))
ANSWER = {"predictions": [0], "probabilities": [[1.0 / CLASSES] * CLASSES]}

app = Flask(__name__)


@app.post("/predict")
def predict() -> Response:
    data = request.get_json()
    if not data or not ("features" in data or "instances" in data):
        return Response("no features", status=400)
    return jsonify(ANSWER)


@app.get("/readyz")
def readyz() -> Response:
    return jsonify({"status": "ready"})
