"""Load a scikit-learn model safely, describe it, and run it.

Supported artifacts: ``.joblib``/``.pkl``/``.pickle`` (joblib), ``.skops`` (skops,
trusted types only), an MLflow model directory (sklearn flavor: skops, pickle or cloudpickle),
and a directory holding exactly one of those files. The bytes that get deserialized are the
bytes whose sha256 was checked: the file is read once, hashed, then loaded from memory.
An input schema (``--input-schema``, else an MLflow directory's signature) must agree with the
feature names and count the estimator was fitted with.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import yaml
from sklearn.base import BaseEstimator
from sklearn.exceptions import InconsistentVersionWarning
from sklearn.utils import get_tags
from sklearn.utils.extmath import softmax

from mlmodel_server import signature
from mlmodel_server.errors import InvalidInputSchema, ModelLoadError, ModelRejectedInput, UnsupportedModel
from mlmodel_server.fetch import check_digest, redact_uri
from mlmodel_server.forest import packed
from mlmodel_server.signature import InputSchema

log = logging.getLogger(__name__)

# The server maps named rows to columns itself and hands the estimator plain arrays.
warnings.filterwarnings("ignore", message="X does not have valid feature names")

PICKLE_SUFFIXES = frozenset({".joblib", ".pkl", ".pickle"})
SKOPS_SUFFIX = ".skops"
MODEL_SUFFIXES = PICKLE_SUFFIXES | {SKOPS_SUFFIX}
MLFLOW_FILE = "MLmodel"

Fused = Callable[[Any, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _argmax_proba(final: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forests and bagging: scikit-learn's ``predict`` is ``classes_.take(argmax(predict_proba))``."""
    proba = final.predict_proba(x)
    return final.classes_.take(np.argmax(proba, axis=1), axis=0), proba


def _hist_gradient_boosting(final: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HistGradientBoostingClassifier: one pass over the trees, then scikit-learn's own expressions."""
    raw = final._raw_predict(x)
    encoded = (raw.ravel() > 0).astype(int) if raw.shape[1] == 1 else np.argmax(raw, axis=1)
    return final.classes_[encoded], final._loss.predict_proba(raw)


def _multiclass_logistic(final: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Multiclass LogisticRegression: one ``decision_function``, then argmax and softmax as scikit-learn does.

    A finite float64 matrix of the right width, which is what the protocol decodes, skips
    scikit-learn's input validation (about 0.4 ms a call, far more than the model): the
    scores are its own product ``x @ coef_.T + intercept_``, and the softmax its own steps.
    """
    coef = final.coef_
    clean = isinstance(x, np.ndarray) and x.dtype == np.float64 and x.ndim == 2 and x.shape[1] == coef.shape[1]
    if clean and np.isfinite(x).all():
        scores = x @ coef.T + final.intercept_
        predictions = final.classes_.take(scores.argmax(axis=1), axis=0)
        scores -= scores.max(axis=1).reshape(-1, 1)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=1).reshape(-1, 1)
        return predictions, scores
    scores = final.decision_function(x)
    return final.classes_.take(scores.argmax(axis=1), axis=0), softmax(scores, copy=False)


def _fused_for(final: Any) -> Fused | None:
    """How to get ``predict`` and ``predict_proba`` of ``final`` from one pass, where that is exact."""
    name = type(final).__name__
    forest = packed(final)
    if forest is not None:
        return forest
    if name in {"RandomForestClassifier", "ExtraTreesClassifier", "BaggingClassifier"}:
        return _argmax_proba if getattr(final, "n_outputs_", 1) == 1 else None
    if name == "HistGradientBoostingClassifier" and hasattr(final, "_raw_predict") and hasattr(final, "_loss"):
        return _hist_gradient_boosting
    if name == "LogisticRegression" and len(getattr(final, "classes_", ())) > 2:
        return _multiclass_logistic
    return None


@dataclass(frozen=True)
class Prediction:
    """What one model call returns: predictions, and class probabilities when offered."""

    predictions: np.ndarray
    probabilities: np.ndarray | None = None

    def rows(self, start: int, stop: int) -> Prediction:
        """The slice of this prediction for rows ``start:stop``."""
        proba = None if self.probabilities is None else self.probabilities[start:stop]
        return Prediction(self.predictions[start:stop], proba)


@dataclass(frozen=True)
class Artifact:
    """The one file to deserialize, and what its surroundings say about it."""

    path: Path
    kind: str  # "joblib" or "skops"
    saved_sklearn_version: str | None = None
    signature_inputs: str | None = None  # an MLflow signature's inputs (JSON), as MLmodel holds them


class LoadedModel:
    """A verified estimator and what clients may know about it."""

    def __init__(
        self,
        estimator: Any,
        *,
        sha256: str,
        source: str,
        saved_sklearn_version: str | None,
        load_seconds: float,
        inputs: InputSchema | None = None,
    ) -> None:
        if not callable(getattr(estimator, "predict", None)):
            raise UnsupportedModel(f"{source} holds a {type(estimator).__name__}, which has no predict method")
        self.estimator = estimator
        self.sha256 = sha256
        self.source = source
        self.load_seconds = load_seconds
        self.saved_sklearn_version = saved_sklearn_version
        self.runtime_sklearn_version: str = sklearn.__version__
        self.estimator_class = type(estimator).__name__
        self.estimator_type = _estimator_type(estimator)
        n_features = getattr(estimator, "n_features_in_", None)
        names = getattr(estimator, "feature_names_in_", None)
        self.fitted_names: tuple[str, ...] | None = tuple(str(n) for n in names) if names is not None else None
        fitted_width = int(n_features) if n_features is not None else None
        if inputs is not None:
            _check_agrees(inputs, self.fitted_names, fitted_width, source)
        self.inputs = inputs
        self.n_features = len(inputs.columns) if inputs is not None else fitted_width
        self.feature_names = inputs.names if inputs is not None else self.fitted_names
        classes = getattr(estimator, "classes_", None)
        self.classes: list[Any] | None = np.asarray(classes).tolist() if classes is not None else None
        self.has_proba = callable(getattr(estimator, "predict_proba", None))
        self.allow_nan = _allows_nan(estimator)
        is_pipeline = hasattr(estimator, "steps")
        self._final = estimator.steps[-1][1] if is_pipeline else estimator
        self._head = estimator[:-1] if is_pipeline else None
        self._fused = _fused_for(self._final) if self.has_proba else None

    @property
    def version(self) -> str:
        """The model's version in V2 URLs and metadata: a short prefix of its sha256."""
        return self.sha256[:12]

    @property
    def version_mismatch(self) -> bool:
        """True when the artifact was saved with another scikit-learn than the one running."""
        return self.saved_sklearn_version not in (None, self.runtime_sklearn_version)

    def predict(self, x: np.ndarray, *, want_proba: bool) -> Prediction:
        """Run the estimator on ``x``; probabilities only if wanted and offered.

        Where both follow exactly from one pass of the model (forests, gradient boosting,
        multiclass logistic regression), the model runs once.
        An input the estimator rejects (its ``ValueError``) becomes ``ModelRejectedInput``.
        """
        try:
            if self._fused is not None:
                xt = x if self._head is None else self._head.transform(x)
                predictions, probabilities = self._fused(self._final, xt)
                return Prediction(predictions, probabilities if want_proba else None)
            proba = self.estimator.predict_proba(x) if want_proba and self.has_proba else None
            return Prediction(np.asarray(self.estimator.predict(x)), proba)
        except ValueError as err:
            raise ModelRejectedInput(f"the model rejected the input: {err}") from err

    def verify(self) -> None:
        """Predict one row of zeros, so a model that cannot predict never serves."""
        if self.n_features is None:
            return
        try:
            self.predict(np.zeros((1, self.n_features)), want_proba=True)
        except Exception as err:
            raise ModelLoadError(f"{self.source} failed a test prediction on one row of zeros: {err}") from err

    def call_seconds(self, rows: int) -> float:
        """The fastest of a few calls on ``rows`` rows of zeros, with one OpenMP/BLAS thread.

        One thread also keeps the process safe to fork: no pool of threads is started.
        """
        from threadpoolctl import threadpool_limits

        x = np.zeros((rows, self.n_features or 1))
        best = float("inf")
        with threadpool_limits(limits=1):
            for _ in range(5):
                started = time.perf_counter()
                self.predict(x, want_proba=True)
                best = min(best, time.perf_counter() - started)
        return best

    def info(self) -> dict[str, Any]:
        """The body of ``/model-info``."""
        return {
            "estimator": self.estimator_class,
            "estimator_type": self.estimator_type,
            "n_features_in": self.n_features,
            "feature_names_in": list(self.fitted_names) if self.fitted_names else None,
            "inputs": self.inputs.describe() if self.inputs is not None else None,
            "classes": self.classes,
            "has_predict_proba": self.has_proba,
            "sha256": self.sha256,
            "sklearn_version": {
                "saved": self.saved_sklearn_version,
                "runtime": self.runtime_sklearn_version,
                "mismatch": self.version_mismatch,
            },
        }


def locate(path: Path) -> Artifact:
    """Find the artifact to load at ``path``: a model file, an MLflow directory, or a directory of one model."""
    if path.is_file():
        return Artifact(path, _kind(path))
    if not path.is_dir():
        raise ModelLoadError(f"model not found: {path}")
    mlmodel = path / MLFLOW_FILE
    if mlmodel.is_file():
        return _mlflow_artifact(mlmodel)
    candidates = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in MODEL_SUFFIXES)
    if len(candidates) != 1:
        found = ", ".join(p.name for p in candidates) or "none"
        raise UnsupportedModel(
            f"directory {path} must hold exactly one model file ({', '.join(sorted(MODEL_SUFFIXES))}) "
            f"or an MLflow MLmodel file; found: {found}"
        )
    return Artifact(candidates[0], _kind(candidates[0]))


def load(
    path: Path,
    *,
    source: str,
    sha256: str | None,
    skops_trusted: tuple[str, ...] = (),
    inputs: InputSchema | None = None,
) -> LoadedModel:
    """Locate, digest-check and deserialize the model at ``path``.

    The digest is checked before a single byte is unpickled, and a mismatch names both digests.
    ``inputs`` is the input contract; without it, an MLflow directory's signature is, where it names its columns.
    """
    started = time.perf_counter()
    source = redact_uri(source)
    artifact = locate(path)
    data = artifact.path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    check_digest(source, sha256, actual)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InconsistentVersionWarning)
        estimator = _deserialize(artifact, data, skops_trusted)
    saved = artifact.saved_sklearn_version or _saved_version(estimator, caught)
    try:
        model = LoadedModel(
            estimator,
            sha256=actual,
            source=source,
            saved_sklearn_version=saved,
            load_seconds=time.perf_counter() - started,
            inputs=inputs if inputs is not None else _signature_contract(artifact),
        )
    except ModelLoadError:
        raise
    except Exception as err:
        raise UnsupportedModel(f"{source} holds a {type(estimator).__name__} that cannot be served: {err}") from err
    if model.version_mismatch:
        log.warning(
            "model was saved with another scikit-learn version",
            extra={"fields": {"saved": saved, "runtime": model.runtime_sklearn_version}},
        )
    return model


def _kind(path: Path) -> str:
    if path.suffix in PICKLE_SUFFIXES:
        return "joblib"
    if path.suffix == SKOPS_SUFFIX:
        return "skops"
    raise UnsupportedModel(f"unsupported model file {path.name}: expected one of {', '.join(sorted(MODEL_SUFFIXES))}")


def _mlflow_artifact(mlmodel: Path) -> Artifact:
    try:
        spec = yaml.safe_load(mlmodel.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise UnsupportedModel(f"cannot read {mlmodel}: {err}") from err
    flavors = spec.get("flavors") if isinstance(spec, dict) else None
    flavor = flavors.get("sklearn") if isinstance(flavors, dict) else None
    if not isinstance(flavor, dict) or "pickled_model" not in flavor:
        names = ", ".join(flavors) if isinstance(flavors, dict) else "none"
        raise UnsupportedModel(f"{mlmodel} has no sklearn flavor with a pickled_model (flavors: {names})")
    fmt = flavor.get("serialization_format", "cloudpickle")
    kind = "skops" if fmt == "skops" else "joblib"
    version = flavor.get("sklearn_version")
    described = spec.get("signature")
    inputs = described.get("inputs") if isinstance(described, dict) else None
    return Artifact(
        mlmodel.parent / str(flavor["pickled_model"]),
        kind,
        str(version) if version else None,
        inputs if isinstance(inputs, str) else None,
    )


def _signature_contract(artifact: Artifact) -> InputSchema | None:
    """An MLflow directory's signature as the input contract, where it makes one (named columns)."""
    if artifact.signature_inputs is None:
        return None
    origin = f"the signature in {artifact.path.parent / MLFLOW_FILE}"
    try:
        return signature.parse(artifact.signature_inputs, origin)
    except InvalidInputSchema as err:
        log.warning("the MLflow signature is not the input contract", extra={"fields": {"reason": err.message}})
        return None


def _check_agrees(inputs: InputSchema, names: tuple[str, ...] | None, width: int | None, source: str) -> None:
    """Refuse an input schema that disagrees with the feature names or count the estimator was fitted with."""
    if names is not None and names != inputs.names:
        problems = [f"missing {n}" for n in names if n not in inputs.by_name]
        problems += [f"not fitted with {n}" for n in inputs.names if n not in names]
        raise InvalidInputSchema(
            f"{inputs.origin} disagrees with the feature names {source} was fitted with: "
            f"{'; '.join(problems) or 'it orders them differently'}; the model's are {', '.join(names)}"
        )
    if width is not None and width != len(inputs.columns):
        raise InvalidInputSchema(
            f"{inputs.origin} has {len(inputs.columns)} columns, but {source} was fitted on {width} features"
        )


def _deserialize(artifact: Artifact, data: bytes, skops_trusted: tuple[str, ...]) -> Any:
    if artifact.kind == "skops":
        import skops.io

        untrusted = [t for t in skops.io.get_untrusted_types(data=data) if t not in skops_trusted]
        if untrusted:
            raise ModelLoadError(
                f"{artifact.path.name} contains types that are not trusted: {', '.join(untrusted)}. "
                "Review them, then pass them to --skops-trusted."
            )
        try:
            return skops.io.loads(data, trusted=list(skops_trusted) or None)
        except Exception as err:
            raise ModelLoadError(f"cannot load {artifact.path.name} with skops: {err}") from err
    import joblib

    try:
        return joblib.load(io.BytesIO(data))
    except Exception as err:
        raise ModelLoadError(f"cannot unpickle {artifact.path.name}: {type(err).__name__}: {err}") from err


def _saved_version(estimator: Any, caught: list[warnings.WarningMessage]) -> str | None:
    for warning in caught:
        if isinstance(warning.message, InconsistentVersionWarning):
            return str(warning.message.original_sklearn_version)
    if isinstance(estimator, BaseEstimator):
        return str(sklearn.__version__)  # unpickled without a version warning: saved with this one
    return None


def _estimator_type(estimator: Any) -> str | None:
    try:
        kind = get_tags(estimator).estimator_type
    except Exception:  # noqa: BLE001 - not a scikit-learn estimator: no tags to read
        kind = getattr(estimator, "_estimator_type", None)
    return str(kind) if kind is not None else None


def _allows_nan(estimator: Any) -> bool:
    try:
        return bool(get_tags(estimator).input_tags.allow_nan)
    except Exception:  # noqa: BLE001 - no tags: let the estimator decide on NaN itself
        return True
