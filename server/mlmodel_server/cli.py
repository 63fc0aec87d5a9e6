"""``mlmodel-server``: parse settings, fetch and check the model, then hand over to gunicorn."""

from __future__ import annotations

import atexit
import logging
import logging.config
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from mlmodel_server.config import parse_settings
from mlmodel_server.errors import ModelLoadError

if TYPE_CHECKING:
    from mlmodel_server.model import LoadedModel

# One BLAS/OpenMP thread per worker: the server scales with workers and batches, and
# oversubscribed OpenMP threads are slow. Set before numpy and scikit-learn are imported.
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``mlmodel-server`` console script."""
    settings = parse_settings(argv)
    for var in _THREAD_VARS:
        os.environ.setdefault(var, "1")
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Read by prometheus_client when it is first imported, which happens below.
        metrics_dir = tempfile.mkdtemp(prefix="mlmodel-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        atexit.register(shutil.rmtree, metrics_dir, True)

    # scikit-learn (seconds to import) only once the model is fetched: a missing or wrong file fails at once.
    from mlmodel_server import auth, fetch, signature
    from mlmodel_server.logs import logging_config
    from mlmodel_server.termination import report_load_failure

    logging.config.dictConfig(logging_config(settings.log_level))
    log = logging.getLogger("mlmodel_server")
    try:
        schema = settings.input_schema
        inputs = signature.parse(schema, "--input-schema (INPUT_SCHEMA)") if schema is not None else None
        api_keys = auth.read_keys(settings.api_keys_file) if settings.api_keys_file else None
        path = fetch.fetch(
            settings.model_uri,
            sha256=settings.model_sha256,
            cache_dir=settings.cache_dir,
            allow_unpinned=settings.allow_unpinned,
            timeout=settings.download_timeout,
            retries=settings.download_retries,
            credentials=settings.credentials,
        )
        from mlmodel_server import model

        if settings.preload:
            loaded = model.load(
                path,
                source=settings.model_uri,
                sha256=settings.model_sha256,
                skops_trusted=settings.skops_trusted,
                inputs=inputs,
            )
            log.info("model loaded", extra={"fields": {**loaded.info(), "seconds": round(loaded.load_seconds, 3)}})
            if settings.threads == 0:
                settings = replace(settings, threads=_threads_for(loaded))
                log.info("request threads sized to the model", extra={"fields": {"threads": settings.threads}})
        else:
            artifact = model.locate(path)
            fetch.check_digest(settings.model_uri, settings.model_sha256, fetch.file_sha256(artifact.path))
            loaded = None
    except ModelLoadError as err:
        report_load_failure(err)
        sys.exit(2)
    if settings.threads == 0:
        settings = replace(settings, threads=16)  # loaded per worker: nothing to measure here
    from mlmodel_server.serve import ModelServer

    ModelServer(settings, path, loaded, api_keys, inputs).run()


def _threads_for(loaded: LoadedModel) -> int:
    """Size the request threads to what one model call costs, alone and for a batch."""
    from mlmodel_server.batching import PROBE_ROWS, threads_for

    try:
        return threads_for(loaded.call_seconds(1), loaded.call_seconds(PROBE_ROWS))
    except Exception:  # noqa: BLE001 - a model that will not predict zeros fails verify() in the worker
        return 16
