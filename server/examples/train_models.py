"""Train the example models that the demo, the benchmark and the tests serve.

Writes ``iris.joblib`` (the tutorials' RandomForest: 100 trees, depth 3, fitted
on named features), ``iris-v2.joblib`` (its successor for canary examples: 200
trees, depth 5), ``hgb.joblib`` (HistGradientBoostingClassifier, 30
features) and ``logreg.joblib`` (LogisticRegression, 30 features) into
``--out``, then prints one JSON object per model with its path and sha256.

Three more are bad on purpose, for a rollout's analysis to abort (``make demo`` shows it):
``iris-5xx.joblib`` is iris with two of its three class labels lost, so it
loads and passes the server's test prediction (a row of zeros is class 0) but
answers 500 for every row of class 1 or 2; ``iris-slow.joblib`` answers
right (95 % of the flowers), about 100 ms a row (1,000 bagged trees of depth 2, which
scikit-learn walks one at a time, where iris takes well under a millisecond);
``iris-shuffled.joblib`` is iris fitted on shuffled labels: fast, a 200 for
every row, and wrong (it agrees with iris on about 1 flower in 5).

Needs only ``./server`` installed, plus pandas for the iris models (fitted on a DataFrame).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

# One OpenMP thread: faster on a busy 2-core machine and byte-for-byte repeatable.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import joblib
from sklearn.datasets import load_iris, make_classification
from sklearn.ensemble import (
    BaggingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def _iris_data() -> tuple[Any, Any]:
    try:
        iris = load_iris(as_frame=True)  # named features need a DataFrame
    except ImportError:
        raise SystemExit(
            "the iris models are fitted on named features, which needs pandas: "
            "pip install pandas (or train only --only hgb --only logreg)"
        ) from None
    return iris.data.set_axis(IRIS_FEATURES, axis=1), iris.target


def _iris() -> Any:
    return RandomForestClassifier(n_estimators=100, max_depth=3, random_state=0).fit(*_iris_data())


def _iris_v2() -> Any:
    return RandomForestClassifier(n_estimators=200, max_depth=5, random_state=1).fit(*_iris_data())


def _iris_5xx() -> Any:
    model = _iris()
    model.classes_ = model.classes_[:1]  # predicting class 1 or 2 now raises IndexError
    return model


def _iris_slow() -> Any:
    return BaggingClassifier(DecisionTreeClassifier(max_depth=2), n_estimators=1000, random_state=0).fit(*_iris_data())


def _iris_shuffled() -> Any:
    x, y = _iris_data()
    shuffled = y.sample(frac=1, random_state=0).to_numpy()
    return RandomForestClassifier(n_estimators=100, max_depth=3, random_state=0).fit(x, shuffled)


def _thirty_features() -> tuple[Any, Any]:
    x, y = make_classification(n_samples=5000, n_features=30, n_informative=10, n_classes=3, random_state=0)
    return x, y


def _hgb() -> Any:
    return HistGradientBoostingClassifier(random_state=0).fit(*_thirty_features())


def _logreg() -> Any:
    return LogisticRegression(max_iter=1000).fit(*_thirty_features())


MODELS: dict[str, Callable[[], Any]] = {
    "iris": _iris,
    "iris-v2": _iris_v2,
    "iris-5xx": _iris_5xx,
    "iris-slow": _iris_slow,
    "iris-shuffled": _iris_shuffled,
    "hgb": _hgb,
    "logreg": _logreg,
}
COMPRESSED = {"iris-slow", "iris-shuffled"}  # small enough for the example model store's ConfigMap (1 MiB for them all)


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--only", choices=list(MODELS), action="append", help="train only these (repeatable)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only or MODELS:
        path = args.out / f"{name}.joblib"
        joblib.dump(MODELS[name](), path, compress=3 if name in COMPRESSED else 0)
        print(json.dumps({"name": name, "path": str(path), "sha256": sha256_of(path)}))


if __name__ == "__main__":
    main()
