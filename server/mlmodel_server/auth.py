"""Optional API keys, read from a file (a mounted Secret), compared in constant time."""

from __future__ import annotations

import hmac
import logging
import threading
import time
from pathlib import Path

from mlmodel_server.errors import ModelLoadError, Unauthorized

OPEN_PATHS = frozenset({"/", "/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"})

RECHECK_S = 1.0
"""How often, at most, a request looks at the keys file for a change."""

log = logging.getLogger(__name__)


def read_keys(path: Path) -> tuple[bytes, ...]:
    """One key a line; blank lines and ``#`` comments are skipped. An empty file is an error."""
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise ModelLoadError(f"cannot read --api-keys-file {path}: {err}") from err
    keys = tuple(line.strip().encode() for line in lines if line.strip() and not line.lstrip().startswith("#"))
    if not keys:
        raise ModelLoadError(f"--api-keys-file {path} holds no keys")
    return keys


def presented_key(authorization: str, api_key: str) -> bytes | None:
    """The key from an ``Authorization: Bearer`` or an ``X-API-Key`` header value, if any."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip().encode()
    return api_key.strip().encode() or None


def check(authorization: str, api_key: str, keys: tuple[bytes, ...]) -> None:
    """Raise ``Unauthorized`` unless a valid key is presented; every key is compared, always."""
    presented = presented_key(authorization, api_key)
    if presented is None:
        raise Unauthorized("an API key is required: send Authorization: Bearer <key> or X-API-Key: <key>")
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(presented, key)
    if not matched:
        raise Unauthorized("the API key is not valid")


def _signature(path: Path) -> tuple[int, int, int, int] | None:
    """What changes when the file does, through a mounted Secret's ``..data`` symlink swap too."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


class KeyFile:
    """The keys of ``path``, re-read when the file changes; looked at on the request path, at most once a
    ``RECHECK_S``. A file that vanishes or reads empty mid-update keeps the last good keys."""

    def __init__(self, path: Path, keys: tuple[bytes, ...]) -> None:
        self.path = path
        self._keys = keys
        self._signature = _signature(path)
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    def current(self) -> tuple[bytes, ...]:
        """The keys now in force."""
        if time.monotonic() - self._checked < RECHECK_S or not self._lock.acquire(blocking=False):
            return self._keys
        try:
            self._checked = time.monotonic()
            signature = _signature(self.path)
            if signature is not None and signature != self._signature:
                try:
                    self._keys = read_keys(self.path)
                except ModelLoadError as err:
                    log.warning("keeping the API keys in force: %s", err)
                else:
                    self._signature = signature
                    log.info("reloaded %d API keys from %s", len(self._keys), self.path)
        finally:
            self._lock.release()
        return self._keys
