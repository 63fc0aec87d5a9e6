"""The example models (iris, iris-v2, and iris-5xx, iris-slow and iris-shuffled for a rollout to abort), the model
store that serves them in a namespace, and the ModelDeployments built on them."""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from mlmodel_operator import names

from mlmodel_testing.cluster import CACHE, REPO, Cluster, run
from mlmodel_testing.status import wait_settled

MODEL_STORE = REPO / "manifests" / "examples" / "model-store.yaml"
CANARY_EXAMPLE = REPO / "manifests" / "examples" / "iris-canary.yaml"
ROLLOUT_EXAMPLE = REPO / "manifests" / "examples" / "iris-rollout.yaml"
SHADOW_EXAMPLE = REPO / "manifests" / "examples" / "iris-shadow-rollout.yaml"
MLFLOW_SERVER = REPO / "manifests" / "examples" / "mlflow.yaml"  # a tracking server: Service mlflow, port 5000
MLFLOW_EXAMPLE = REPO / "manifests" / "examples" / "iris-mlflow.yaml"  # models:/iris@champion from it
V1 = "http://model-store/iris.joblib"
V2 = "http://model-store/iris-v2.joblib"
FIVE_XX = "http://model-store/iris-5xx.joblib"  # answers 500 for every row of class 1 or 2
SLOW = "http://model-store/iris-slow.joblib"  # answers right, about 100 ms a row: far slower than iris
SHUFFLED = "http://model-store/iris-shuffled.joblib"  # fitted on shuffled labels: a 200 for every row, and wrong
WRONG_DIGEST = "0" * 64
TRAIN_SCRIPT = REPO / "server" / "examples" / "train_models.py"
TRAINED = ("iris", "iris-v2", "iris-5xx", "iris-slow", "iris-shuffled")
DIGESTS = "sha256.json"  # beside the fitted models in the cache: each one's digest


def train_models(out: Path) -> dict[str, str]:
    """The example models iris, iris-v2, iris-5xx, iris-slow and iris-shuffled in ``out``: their sha256. Fitted by
    ``server/examples/train_models.py`` once for that script and the versions of the libraries it fits with, and kept
    in the cache: it fits the same bytes each time (the examples pin their digests), in 10 CPU-seconds."""
    cached = CACHE / "models" / _training_key()
    cached.parent.mkdir(parents=True, exist_ok=True)
    with (cached.parent / "models.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one fit, whichever process asks first
        if not (cached / DIGESTS).exists():
            fitting = Path(tempfile.mkdtemp(dir=cached.parent))
            python = REPO / ".venv" / "bin" / "python"
            argv = [str(python) if python.exists() else sys.executable, str(TRAIN_SCRIPT), "--out", str(fitting)]
            trained = run([*argv, *(arg for name in TRAINED for arg in ("--only", name))], timeout=300)
            digests = {m["name"]: m["sha256"] for m in map(json.loads, trained.stdout.splitlines())}
            (fitting / DIGESTS).write_text(json.dumps(digests))
            shutil.rmtree(cached, ignore_errors=True)
            fitting.rename(cached)
    out.mkdir(parents=True, exist_ok=True)
    for name in TRAINED:
        shutil.copyfile(cached / f"{name}.joblib", out / f"{name}.joblib")
    found: dict[str, str] = json.loads((cached / DIGESTS).read_text())
    return found


def _training_key() -> str:
    """What the fitted bytes depend on: the script, and the libraries' versions."""
    key = hashlib.sha256(TRAIN_SCRIPT.read_bytes())
    for package in ("scikit-learn", "numpy", "scipy", "joblib", "pandas"):
        key.update(f"{package}=={importlib.metadata.version(package)}".encode())
    return key.hexdigest()[:16]


def deploy_model_store(cluster: Cluster, namespace: str, models: Path) -> None:
    """The models in ``models`` (the example models, and any a test made there), served in ``namespace``
    at http://model-store/<file>. Idempotent."""
    configmap = cluster.kubectl(
        "-n",
        namespace,
        "create",
        "configmap",
        "example-models",
        *(f"--from-file={path}" for path in sorted(models.glob("*.joblib"))),
        "--dry-run=client",
        "-o",
        "json",
    )
    # Server-side: a client-side apply would keep the models in an annotation, which is limited to 256 KiB.
    cluster.kubectl("-n", namespace, "apply", "--server-side", "--force-conflicts", "-f", "-", input=configmap.stdout)
    cluster.kubectl("-n", namespace, "apply", "-f", str(MODEL_STORE))


def digests(models: Path) -> tuple[str, str]:
    """The sha256 of iris and iris-v2 in ``models``."""
    return tuple(  # type: ignore[return-value]
        hashlib.sha256((models / f).read_bytes()).hexdigest() for f in ("iris.joblib", "iris-v2.joblib")
    )


def digest(models: Path, uri: str) -> str:
    """The sha256 of the model at ``uri`` (one of this module's) in ``models``."""
    return hashlib.sha256((models / uri.rsplit("/", 1)[1]).read_bytes()).hexdigest()


def variant(name: str, uri: str, sha: str, weight: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "modelUri": uri, "modelSha256": sha, "weight": weight, **extra}


def md(
    namespace: str, variants: list[dict[str, Any]], routing: dict[str, Any] | None = None, name: str = "iris"
) -> dict[str, Any]:
    """ModelDeployment ``name`` with ``variants`` (and ``routing``)."""
    spec: dict[str, Any] = {"variants": variants}
    if routing:
        spec["routing"] = routing
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def broken_model(namespace: str) -> dict[str, Any]:
    """ModelDeployment ``broken``: the example iris model with a digest that does not match it."""
    return md(namespace, [{"name": "v1", "modelUri": V1, "modelSha256": WRONG_DIGEST}], name="broken")


def deploy(cluster: Cluster, namespace: str, models: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """The model store with ``models``, then ``manifest``: its status once settled."""
    deploy_model_store(cluster, namespace, models)
    cluster.apply(manifest)
    return wait_settled(cluster, namespace)
