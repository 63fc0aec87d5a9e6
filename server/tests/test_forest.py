"""Forests walked all at once (``forest.PackedForest``): scikit-learn's answers bit for bit, and scikit-learn's own
path wherever it would route the input another way."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy import sparse
from sklearn.datasets import make_classification
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.multioutput import MultiOutputClassifier

from mlmodel_server import forest
from mlmodel_server.forest import PackedForest, packed
from mlmodel_server.model import LoadedModel


def _data(n_classes: int, labels: bool = False) -> tuple[np.ndarray, np.ndarray]:
    x, y = make_classification(
        n_samples=600, n_features=8, n_informative=5, n_classes=n_classes, n_clusters_per_class=1, random_state=0
    )
    return x, (np.array(["setosa", "versicolor", "virginica", "other"])[y] if labels else y)


def _rows(fitted: Any, x: np.ndarray) -> np.ndarray:
    """Rows seen in training, rows never seen, and rows lying exactly on the trees' thresholds (float32 ties)."""
    rng = np.random.RandomState(1)
    unseen = rng.normal(size=(40, x.shape[1])) * x.std(axis=0) * 2 + x.mean(axis=0)
    thresholds = np.concatenate([e.tree_.threshold[e.tree_.children_left != -1] for e in fitted.estimators_])
    on_threshold = np.resize(thresholds, (40, x.shape[1]))
    return np.vstack([x[:40], unseen, on_threshold])


FORESTS = {
    "iris-like": lambda: RandomForestClassifier(n_estimators=100, max_depth=3, random_state=0),
    "deep": lambda: RandomForestClassifier(n_estimators=25, random_state=0),
    "extra-trees": lambda: ExtraTreesClassifier(n_estimators=30, max_depth=8, random_state=0),
    "weighted": lambda: RandomForestClassifier(n_estimators=20, class_weight="balanced", random_state=0),
}


@pytest.mark.parametrize("make", FORESTS.values(), ids=list(FORESTS))
@pytest.mark.parametrize("n_classes", [2, 3, 4])
def test_packed_answers_are_scikit_learns_bit_for_bit(make: Any, n_classes: int) -> None:
    x, y = _data(n_classes, labels=n_classes == 4)
    fitted = make().fit(x, y)
    fused = packed(fitted)
    assert isinstance(fused, PackedForest)
    rows = _rows(fitted, x)
    for batch in (rows[:1], rows[40:41], rows[80:81], rows[:16], rows[: forest.MAX_STEPS // fused.levels]):
        assert fused.predict_proba(batch) is not None, len(batch)  # the packed walk itself, not the fallback
        predictions, probabilities = fused(fitted, batch)
        np.testing.assert_array_equal(probabilities, fitted.predict_proba(batch))
        np.testing.assert_array_equal(predictions, fitted.predict(batch))


def test_a_loaded_forest_is_packed_and_answers_one_row_as_scikit_learn(loaded: Any) -> None:
    model: LoadedModel = loaded("iris")
    assert isinstance(model._fused, PackedForest)
    row = np.array([[5.9, 3.0, 4.2, 1.5]])
    prediction = model.predict(row, want_proba=True)
    np.testing.assert_array_equal(prediction.predictions, model.estimator.predict(row))
    np.testing.assert_array_equal(prediction.probabilities, model.estimator.predict_proba(row))


def test_inputs_scikit_learn_routes_otherwise_go_to_scikit_learn() -> None:
    x, y = _data(3)
    fitted = RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0).fit(x, y)
    fused = packed(fitted)
    assert fused is not None
    too_many = np.resize(x, (forest.MAX_STEPS // fused.levels + 1, x.shape[1]))
    nan, inf, huge = x[:2].copy(), x[:2].copy(), x[:2].copy()
    nan[0, 0], inf[1, 3], huge[0, 2] = np.nan, np.inf, 1e300  # 1e300 is inf as float32
    for batch in (too_many, nan, inf, huge, x[:3, :5], x[:0], sparse.csr_matrix(x[:3])):
        assert fused.predict_proba(batch) is None
    np.testing.assert_array_equal(fused(fitted, too_many)[1], fitted.predict_proba(too_many))
    np.testing.assert_array_equal(fused(fitted, nan)[1], fitted.predict_proba(nan))  # this forest takes NaN
    for wrong in (inf, huge, x[:3, :5]):
        with pytest.raises(ValueError) as ours:
            fused(fitted, wrong)
        with pytest.raises(ValueError) as theirs:
            fitted.predict_proba(wrong)
        assert str(ours.value) == str(theirs.value)


def test_only_single_output_forests_of_a_bounded_size_are_packed(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = _data(3)
    two_outputs = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, np.c_[y, y])
    assert packed(two_outputs) is None
    assert packed(MultiOutputClassifier(RandomForestClassifier(n_estimators=5)).fit(x, np.c_[y, y])) is None
    fitted = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, y)
    assert packed(fitted) is not None
    monkeypatch.setattr(forest, "MAX_PACKED_BYTES", 1024)
    assert packed(fitted) is None
