"""Loading: formats, digests, versions; and predictions equal to the estimator's own."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import sklearn.base
import skops.io
from sklearn.ensemble import ExtraTreesClassifier, HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mlmodel_server import errors
from mlmodel_server.model import LoadedModel, load, locate

from conftest import SavedModel, rows_for


def test_joblib_pkl_and_pickle_load(models: dict[str, SavedModel]) -> None:
    for name in ("iris", "logreg", "linreg"):
        saved = models[name]
        model = load(saved.path, source=str(saved.path), sha256=saved.sha256)
        assert model.sha256 == saved.sha256
        assert type(model.estimator) is type(saved.estimator)


def test_digest_mismatch_names_both_digests(models: dict[str, SavedModel]) -> None:
    saved = models["iris"]
    wrong = "0" * 64
    with pytest.raises(errors.DigestMismatch) as caught:
        load(saved.path, source="s3://bucket/iris.joblib", sha256=wrong)
    assert wrong in caught.value.message
    assert saved.sha256 in caught.value.message
    assert "s3://bucket/iris.joblib" in caught.value.message


def test_digest_is_case_insensitive(models: dict[str, SavedModel]) -> None:
    saved = models["iris"]
    assert load(saved.path, source="x", sha256=saved.sha256.upper()).sha256 == saved.sha256


def test_skops_needs_every_type_trusted(tmp_path: Path, models: dict[str, SavedModel]) -> None:
    path = tmp_path / "model.skops"
    skops.io.dump(models["logreg"].estimator, path)
    model = load(path, source=str(path), sha256=None)
    assert model.estimator_class == "LogisticRegression"

    class Custom(sklearn.base.BaseEstimator):  # type: ignore[misc] # not a type skops trusts by default
        def predict(self, x: np.ndarray) -> np.ndarray:
            return np.zeros(len(x))

    globals()["Custom"] = Custom
    Custom.__module__, Custom.__qualname__ = __name__, "Custom"
    custom = tmp_path / "custom.skops"
    skops.io.dump(Custom(), custom)
    with pytest.raises(errors.ModelLoadError, match=r"not trusted: test_model\.Custom.*--skops-trusted"):
        load(custom, source=str(custom), sha256=None)
    assert load(custom, source="x", sha256=None, skops_trusted=("test_model.Custom",)).estimator_class == "Custom"


def test_mlflow_directory(tmp_path: Path, models: dict[str, SavedModel]) -> None:
    shutil.copy(models["iris"].path, tmp_path / "model.pkl")
    (tmp_path / "MLmodel").write_text(
        "flavors:\n  python_function: {loader_module: mlflow.sklearn}\n"
        "  sklearn:\n    pickled_model: model.pkl\n    serialization_format: cloudpickle\n"
        "    sklearn_version: 1.5.2\n"
    )
    model = load(tmp_path, source="x", sha256=models["iris"].sha256)
    assert model.estimator_class == "RandomForestClassifier"
    assert model.saved_sklearn_version == "1.5.2"
    assert model.version_mismatch


def test_mlflow_without_sklearn_flavor(tmp_path: Path) -> None:
    (tmp_path / "MLmodel").write_text("flavors:\n  pytorch: {}\n")
    with pytest.raises(errors.UnsupportedModel, match=r"no sklearn flavor.*pytorch"):
        locate(tmp_path)


def test_directory_with_exactly_one_model(tmp_path: Path, models: dict[str, SavedModel]) -> None:
    shutil.copy(models["iris"].path, tmp_path / "iris.joblib")
    (tmp_path / "README.txt").write_text("not a model")
    assert locate(tmp_path).path.name == "iris.joblib"
    shutil.copy(models["logreg"].path, tmp_path / "other.pkl")
    with pytest.raises(errors.UnsupportedModel, match=r"exactly one model file.*iris.joblib, other.pkl"):
        locate(tmp_path)


def test_unsupported_extension_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(errors.UnsupportedModel, match=r"model.onnx"):
        locate(tmp_path / "model.onnx")
    with pytest.raises(errors.ModelLoadError, match=r"not found"):
        locate(tmp_path / "absent.joblib")


def test_corrupt_file_is_a_load_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.joblib"
    path.write_bytes(b"this is not a pickle")
    with pytest.raises(errors.ModelLoadError, match=r"cannot unpickle broken.joblib"):
        load(path, source=str(path), sha256=hashlib.sha256(path.read_bytes()).hexdigest())


def test_object_without_predict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "dict.joblib"
    joblib.dump({"not": "a model"}, path)
    with pytest.raises(errors.UnsupportedModel, match=r"dict, which has no predict"):
        load(path, source=str(path), sha256=None)


def test_saved_sklearn_version_is_recorded(
    tmp_path: Path, models: dict[str, SavedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sklearn.base, "__version__", "1.0.0")
    path = tmp_path / "old.joblib"
    joblib.dump(models["logreg"].estimator, path)
    monkeypatch.undo()
    model = load(path, source=str(path), sha256=None)
    assert model.saved_sklearn_version == "1.0.0"
    assert model.info()["sklearn_version"] == {"saved": "1.0.0", "runtime": sklearn.__version__, "mismatch": True}


@pytest.mark.parametrize("name", ["iris", "logreg", "hgb", "linreg"])
def test_predictions_equal_the_estimators_own(name: str, loaded: Callable[[str], LoadedModel]) -> None:
    model = loaded(name)
    x = rows_for(name)
    prediction = model.predict(x, want_proba=True)
    np.testing.assert_array_equal(prediction.predictions, model.estimator.predict(x))
    if model.has_proba:
        assert prediction.probabilities is not None
        np.testing.assert_allclose(prediction.probabilities, model.estimator.predict_proba(x))
    else:
        assert prediction.probabilities is None


@pytest.mark.parametrize(
    "estimator",
    [
        ExtraTreesClassifier(n_estimators=20, random_state=0),
        make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=20, random_state=0)),
        HistGradientBoostingClassifier(max_iter=15, random_state=0),
        make_pipeline(StandardScaler(), HistGradientBoostingClassifier(max_iter=15, random_state=0)),
        LogisticRegression(max_iter=500),
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)),
    ],
    ids=["extra-trees", "pipeline-forest", "hgb", "pipeline-hgb", "logreg", "pipeline-logreg"],
)
@pytest.mark.parametrize("n_classes", [2, 3])
def test_one_pass_gives_exactly_what_predict_and_predict_proba_give(estimator: Any, n_classes: int) -> None:
    x = np.random.RandomState(0).normal(size=(400, 5))
    y = np.digitize(x[:, 0] + x[:, 1], [-0.5, 0.5][: n_classes - 1])
    estimator.fit(x, y)
    model = LoadedModel(estimator, sha256="x", source="x", saved_sklearn_version=None, load_seconds=0)
    binary_logistic = n_classes == 2 and type(model._final).__name__ == "LogisticRegression"
    assert (model._fused is None) == binary_logistic
    prediction = model.predict(x, want_proba=True)
    np.testing.assert_array_equal(prediction.predictions, estimator.predict(x))
    np.testing.assert_array_equal(prediction.probabilities, estimator.predict_proba(x))
    assert model.predict(x, want_proba=False).probabilities is None


def test_input_the_estimator_rejects(loaded: Callable[[str], LoadedModel]) -> None:
    with pytest.raises(errors.ModelRejectedInput, match=r"rejected the input"):
        loaded("logreg").predict(np.full((1, 6), np.nan), want_proba=False)


def test_info_describes_the_model(loaded: Callable[[str], LoadedModel]) -> None:
    info = loaded("iris").info()
    assert info["estimator_type"] == "classifier"
    assert info["n_features_in"] == 4
    assert info["feature_names_in"] == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert info["classes"] == [0, 1, 2]
    assert loaded("linreg").info()["estimator_type"] == "regressor"
    assert loaded("hgb").allow_nan and not loaded("logreg").allow_nan
