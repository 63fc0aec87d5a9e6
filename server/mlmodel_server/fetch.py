"""Bring a model URI to a local path: plain paths and ``file://`` as they are,
``http(s)://`` and ``s3://`` through fsspec into a cache, atomically; ``http(s)://`` with credentials
when given (an MLflow tracking server's artifact proxy)."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse, urlsplit, urlunsplit

from mlmodel_server.errors import CredentialsRefused, DigestMismatch, ModelLoadError, UnpinnedModel

log = logging.getLogger(__name__)

REMOTE_SCHEMES = frozenset({"http", "https", "s3"})
_CHUNK = 1 << 20
_REFUSED = frozenset({401, 403})

# MLflow's own names for the credentials (environment only: a flag shows in the process list).
TOKEN_VAR = "MLFLOW_TRACKING_TOKEN"
USERNAME_VAR = "MLFLOW_TRACKING_USERNAME"
PASSWORD_VAR = "MLFLOW_TRACKING_PASSWORD"
# The AWS SDK's, which s3fs reads (the endpoint for an S3-compatible store: MinIO, Ceph, ...).
S3_VARS = "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL for a store other than AWS)"


@dataclass(frozen=True)
class Credentials:
    """Credentials for http(s) downloads: a user name and password (HTTP Basic), or a bearer token."""

    token: str | None = field(default=None, repr=False)
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    def authorization(self) -> str:
        """The ``Authorization`` header's value, encoded as MLflow's client encodes it."""
        if self.username is not None and self.password is not None:
            return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return f"Bearer {self.token}"


def redact_uri(uri: str) -> str:
    """``uri`` fit for logs and errors: without ``user:password@``, query string (presigned URLs, tokens)
    or fragment."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable URI>"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _redacted(text: str, uri: str) -> str:
    """``text`` (say an HTTP client's error) with ``uri`` in it redacted."""
    return text.replace(uri, redact_uri(uri))


def is_remote(uri: str) -> bool:
    """True when ``uri`` names something that has to be downloaded."""
    return urlparse(uri).scheme in REMOTE_SCHEMES


def local_path(uri: str) -> Path:
    """The path of a plain path or ``file://`` URI."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ModelLoadError(
                f"file URI {redact_uri(uri)!r} names host {parsed.hostname!r}; use file:///absolute/path"
            )
        return Path(parsed.path)
    if parsed.scheme == "" or len(parsed.scheme) == 1:  # a Windows drive letter is a path too
        return Path(uri)
    raise ModelLoadError(
        f"unsupported model URI scheme {parsed.scheme!r} in {redact_uri(uri)!r}: use a path, file://, http(s):// or s3://"
    )


def fetch(
    uri: str,
    *,
    sha256: str | None,
    cache_dir: Path,
    allow_unpinned: bool,
    timeout: float,
    retries: int,
    credentials: Credentials | None = None,
) -> Path:
    """Return a local file or directory holding the model that ``uri`` names.

    Remote models need ``sha256`` unless ``allow_unpinned``: unpickling runs arbitrary
    code. A download goes to a temporary name and is renamed into the cache only once
    complete and, when pinned, verified, so a partial file is never loaded. It is named after the URL's fragment if
    any (a route whose query names the file, such as an MLflow tracking server's ``...?path=model.pkl#model.pkl``),
    else after its path. ``credentials``
    go with http(s) requests only; a 401 or 403 is not retried, and no error or log line shows them.
    """
    shown = redact_uri(uri)
    if not is_remote(uri):
        path = local_path(uri)
        if not path.exists():
            raise ModelLoadError(f"model not found: {path} (from --model-uri {shown!r})")
        return path
    if sha256 is None and not allow_unpinned:
        raise UnpinnedModel(
            f"refusing to download {shown} without --model-sha256: unpickling runs arbitrary code. "
            "Pin the digest, or pass --allow-unpinned to accept the risk."
        )
    parsed = urlparse(uri)
    name = Path(parsed.fragment or parsed.path).name or "model"  # a route whose query names the file: its fragment
    key = sha256 or "unpinned-" + hashlib.sha256(uri.encode()).hexdigest()[:16]
    target = cache_dir / key / name
    if sha256 is not None and target.is_file() and file_sha256(target) == sha256:
        log.info("model found in cache", extra={"fields": {"path": str(target)}})
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, retries + 1):
        try:
            return _download(uri, target, sha256=sha256, timeout=timeout, credentials=credentials)
        except ModelLoadError:
            raise
        except Exception as err:
            final = _final(err, uri, credentials)
            if final is not None:
                raise final from None  # the cause holds the request, and so its credentials
            if attempt == retries:
                why = f"{type(err).__name__}: {_redacted(str(err), uri)}"
                raise ModelLoadError(f"could not download {shown} after {retries} attempts: {why}") from err
            delay = min(2.0 ** (attempt - 1), 10.0)
            log.warning(
                "model download failed, retrying",
                extra={
                    "fields": {"uri": shown, "attempt": attempt, "error": _redacted(str(err), uri), "retry_in_s": delay}
                },
            )
            time.sleep(delay)
    raise AssertionError("unreachable")


def _http_status(err: BaseException | None) -> int | None:
    """The HTTP status behind ``err`` (aiohttp's error), if any: fsspec raises ``FileNotFoundError`` from it
    when both its HEAD and its GET fail, whatever the status."""
    while err is not None:
        status = getattr(err, "status", None)
        if isinstance(status, int):
            return status
        err = err.__cause__
    return None


def _final(err: Exception, uri: str, credentials: Credentials | None) -> ModelLoadError | None:
    """The error that ends a download at once, never retried: the credentials refused (or missing), or no model
    there (fsspec's ``FileNotFoundError``: an HTTP 404 or a missing S3 key). s3fs raises ``PermissionError`` for a
    403 (a wrong key or secret, a signature that does not match, no access to the bucket): its message names no
    credential, and is redacted as a retried error's is."""
    shown = redact_uri(uri)
    if isinstance(err, PermissionError):
        return CredentialsRefused(f"{shown} refused the credentials ({_redacted(str(err), uri)}): check {S3_VARS}")
    status = _http_status(err)
    if status in _REFUSED:
        variables = f"{TOKEN_VAR}, or {USERNAME_VAR} and {PASSWORD_VAR}"
        if credentials is None:
            return CredentialsRefused(f"{shown} needs credentials (HTTP {status}): set {variables}")
        return CredentialsRefused(f"{shown} refused the credentials (HTTP {status}): check {variables}")
    if isinstance(err, FileNotFoundError) and status in (None, 404):
        return ModelLoadError(f"model not found: {shown} does not exist (404)")
    return None


def _download(uri: str, target: Path, *, sha256: str | None, timeout: float, credentials: Credentials | None) -> Path:
    import fsspec  # imported here: local models never need it

    options: dict[str, object] = {}
    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        import aiohttp

        client: dict[str, object] = {"timeout": aiohttp.ClientTimeout(total=timeout)}
        if credentials is not None:
            client["headers"] = {"Authorization": credentials.authorization()}
        options["client_kwargs"] = client
    fs, path = fsspec.core.url_to_fs(uri, **options)
    shown = redact_uri(uri)
    if scheme == "s3" and fs.isdir(path):
        staging = Path(tempfile.mkdtemp(dir=target.parent.parent, prefix=".partial-"))
        try:
            fs.get(path.rstrip("/") + "/", str(staging), recursive=True)
            shutil.rmtree(target, ignore_errors=True)
            staging.replace(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target
    digest = hashlib.sha256()
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=".partial-")
    partial = Path(name)
    try:
        with os.fdopen(fd, "wb") as out, fs.open(path, "rb") as src:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        check_digest(shown, sha256, digest.hexdigest())
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    log.info("model downloaded", extra={"fields": {"uri": shown, "path": str(target)}})
    return target


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_digest(what: str, expected: str | None, actual: str) -> None:
    """Raise ``DigestMismatch`` naming both digests unless they agree (or none is expected); ``what`` is shown as
    given (a URI redacted by the caller)."""
    if expected is not None and expected.lower() != actual:
        raise DigestMismatch(f"sha256 mismatch for {what}: expected {expected.lower()}, got {actual}")
