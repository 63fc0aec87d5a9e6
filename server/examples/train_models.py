"""Train the example models that the demo, the benchmark and the tests serve.

Writes ``iris.joblib`` (the tutorials' RandomForest: 100 trees, depth 3, fitted
on named features), ``hgb.joblib`` (HistGradientBoostingClassifier, 30
features) and ``logreg.joblib`` (LogisticRegression, 30 features) into
``--out``, then prints one JSON object per model with its path and sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
from typing import Any

# One OpenMP thread: faster on a busy 2-core machine and byte-for-byte repeatable.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import joblib
from sklearn.datasets import load_iris, make_classification
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression

IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def build_models() -> dict[str, Any]:
    """Fit every example model, deterministically."""
    iris = load_iris(as_frame=True)
    iris_x = iris.data.set_axis(IRIS_FEATURES, axis=1)
    forest = RandomForestClassifier(n_estimators=100, max_depth=3, random_state=0)
    forest.fit(iris_x, iris.target)

    x, y = make_classification(n_samples=5000, n_features=30, n_informative=10, n_classes=3, random_state=0)
    hgb = HistGradientBoostingClassifier(random_state=0).fit(x, y)
    logreg = LogisticRegression(max_iter=1000).fit(x, y)
    return {"iris": forest, "hgb": hgb, "logreg": logreg}


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--only", choices=["iris", "hgb", "logreg"], action="append")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, model in build_models().items():
        if args.only and name not in args.only:
            continue
        path = args.out / f"{name}.joblib"
        joblib.dump(model, path)
        print(json.dumps({"name": name, "path": str(path), "sha256": sha256_of(path)}))


if __name__ == "__main__":
    main()
