"""Optional API keys, read from a file (a mounted Secret), compared in constant time."""

from __future__ import annotations

import hmac
from pathlib import Path

from mlmodel_server.errors import ModelLoadError, Unauthorized

OPEN_PATHS = frozenset({"/", "/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"})


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
