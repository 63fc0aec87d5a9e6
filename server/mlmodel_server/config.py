"""Server settings: every command-line flag, each with an environment variable; and the download credentials,
from the environment only."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlmodel_server.fetch import PASSWORD_VAR, TOKEN_VAR, USERNAME_VAR, Credentials


@dataclass(frozen=True)
class Settings:
    """Everything the server is told at start-up."""

    model_uri: str
    model_sha256: str | None = None
    model_name: str = "model"
    variant: str = "default"
    host: str = "0.0.0.0"
    port: int = 8080
    workers: int = 1
    threads: int = 0  # 0: sized to the model's call cost, see batching.threads_for
    max_batch_size: int = 10_000
    max_batch_wait_ms: float = 2.0
    max_body_bytes: int = 10 * 1024 * 1024
    max_json_bytes: int = 1024 * 1024
    api_keys_file: Path | None = None
    allow_unpinned: bool = False
    skops_trusted: tuple[str, ...] = ()
    input_schema: str | None = None  # an MLflow signature's inputs (JSON), parsed by ``signature.parse``
    cache_dir: Path = Path(tempfile.gettempdir()) / "mlmodel-cache"
    download_timeout: float = 60.0
    download_retries: int = 3
    preload: bool = True
    graceful_timeout: int = 30
    log_level: str = "info"
    credentials: Credentials | None = field(default=None, repr=False)


def default_workers() -> int:
    """One worker per CPU this process may run on."""
    return len(os.sched_getaffinity(0))


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected true or false")


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


# flag, environment variable, parser, help
_FLAGS: list[tuple[str, str, Callable[[str], Any], str]] = [
    ("--model-uri", "MODEL_URI", str, "model to serve: a path, file://, http(s)://, s3://"),
    ("--model-sha256", "MODEL_SHA256", str, "expected sha256 of the model file, checked before unpickling"),
    ("--model-name", "MODEL_NAME", str, "name in URLs and headers"),
    ("--variant", "MODEL_VARIANT", str, "variant name reported in headers, logs and metrics"),
    ("--host", "HOST", str, "address to listen on"),
    ("--port", "PORT", int, "port to listen on"),
    ("--workers", "WORKERS", int, "gunicorn worker processes (default: one per usable CPU)"),
    ("--threads", "THREADS", int, "request threads per worker (default: 16 for a costly model, else 2)"),
    ("--max-batch-size", "MAX_BATCH_SIZE", int, "most rows in one request, and in one coalesced model call"),
    ("--max-batch-wait-ms", "MAX_BATCH_WAIT_MS", float, "longest wait for more requests to join a batch"),
    ("--max-body-bytes", "MAX_BODY_BYTES", int, "largest request body accepted (V2 binary tensors)"),
    ("--max-json-bytes", "MAX_JSON_BYTES", int, "largest JSON request body accepted"),
    ("--api-keys-file", "API_KEYS_FILE", Path, "file of API keys, one a line; enables authentication"),
    ("--skops-trusted", "SKOPS_TRUSTED", _csv, "comma-separated extra types to trust in .skops files"),
    ("--input-schema", "INPUT_SCHEMA", str, "the MLflow signature's inputs (JSON, column-based): the input contract"),
    ("--cache-dir", "MODEL_CACHE_DIR", Path, "where downloaded models are kept"),
    ("--download-timeout", "DOWNLOAD_TIMEOUT", float, "seconds per download attempt"),
    ("--download-retries", "DOWNLOAD_RETRIES", int, "download attempts before giving up"),
    ("--graceful-timeout", "GRACEFUL_TIMEOUT", int, "seconds to drain in-flight requests on SIGTERM"),
    ("--log-level", "LOG_LEVEL", str, "debug, info, warning or error"),
]
_SWITCHES: list[tuple[str, str, str]] = [
    ("allow-unpinned", "ALLOW_UNPINNED", "serve a remote model without --model-sha256"),
    ("preload", "PRELOAD", "load the model once in the gunicorn master (copy-on-write)"),
]


# what an environment variable's parser expects: the error names this, never the value (it may be a Secret)
_EXPECTED: dict[Callable[[str], Any], str] = {int: "an integer", float: "a number"}


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def parse_settings(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build ``Settings`` from flags, then environment variables, then defaults."""
    env = os.environ if env is None else env
    defaults = Settings(model_uri="", workers=default_workers())
    parser = argparse.ArgumentParser(prog="mlmodel-server", description="Serve one scikit-learn model over HTTP.")
    for flag, var, convert, text in _FLAGS:
        default = getattr(defaults, _dest(flag))
        if var in env:
            try:
                default = convert(env[var])
            except ValueError:
                parser.error(f"environment variable {var}: expected {_EXPECTED.get(convert, 'a valid value')}")
        parser.add_argument(flag, type=convert, default=default, help=f"{text} [{var}]")
    for name, var, text in _SWITCHES:
        default = getattr(defaults, _dest(name))
        if var in env:
            try:
                default = _bool(env[var])
            except ValueError:
                parser.error(f"environment variable {var}: expected true or false")
        parser.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=default, help=f"{text} [{var}]")
    args = parser.parse_args(argv)
    if not args.model_uri:
        parser.error("--model-uri (or MODEL_URI) is required")
    for flag in (
        "--port",
        "--workers",
        "--max-batch-size",
        "--max-body-bytes",
        "--max-json-bytes",
        "--download-retries",
    ):
        if getattr(args, _dest(flag)) < 1:
            parser.error(f"{flag} must be at least 1")
    if args.threads < 0:
        parser.error("--threads must not be negative (0 sizes it to the model)")
    if args.max_batch_wait_ms < 0:
        parser.error("--max-batch-wait-ms must not be negative")
    for optional in ("model_sha256", "input_schema"):
        if getattr(args, optional) == "":
            setattr(args, optional, None)
    return Settings(**vars(args), credentials=_credentials(env, parser))


def _credentials(env: Mapping[str, str], parser: argparse.ArgumentParser) -> Credentials | None:
    """The download credentials for http(s) model URIs in ``env`` only, under MLflow's names: a user name and
    password (HTTP Basic, preferred as MLflow prefers them), else a token; never echoed."""
    username, password, token = (env.get(var) or None for var in (USERNAME_VAR, PASSWORD_VAR, TOKEN_VAR))
    if (username is None) != (password is None):
        parser.error(f"environment variables {USERNAME_VAR} and {PASSWORD_VAR} go together: set both or neither")
    if username is not None and password is not None:
        return Credentials(username=username, password=password)
    return Credentials(token=token) if token is not None else None
