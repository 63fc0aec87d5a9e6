"""AWS Signature Version 4 for S3 requests without a body (GET, HEAD), pure: the headers that sign a request with
an access key, as S3 and S3-compatible stores (MinIO, Ceph, ...) check them, and where an ``s3://`` URL is on an
endpoint (path-style: ``{endpoint}/{bucket}/{key}``).

As AWS documents it for S3 ("Signature Calculations for the Authorization Header: Transferring Payload in a Single
Chunk"): a canonical request (method, URI-encoded path, sorted query, the signed headers lower-cased and sorted, the
payload's hash), hashed into a string to sign with the request's time and scope (date/region/s3/aws4_request), and
HMAC-SHA256 with a key derived from the secret through the same scope. The secret never leaves ``sign``: only the
signature does, beside the access key ID.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import parse_qsl, quote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "s3"
DEFAULT_REGION = "us-east-1"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()  # the payload hash of a request without a body
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"


def aws_endpoint(region: str) -> str:
    """AWS's own S3 endpoint of ``region``."""
    return f"https://s3.{region}.amazonaws.com"


def object_url(endpoint: str, bucket: str, key: str) -> str:
    """The path-style URL of ``key`` in ``bucket`` on ``endpoint`` (``http(s)://host[:port][/prefix]``), its path
    encoded as S3 signs it: every byte but the unreserved ones and ``/``, percent-encoded."""
    return f"{endpoint.rstrip('/')}/{quote(bucket, safe='')}/{quote(key, safe='/')}"


def split(url: str) -> tuple[str, str]:
    """The bucket and key of ``s3://bucket/key``, as the AWS SDK and s3fs read it (the key as written, no
    decoding); ``ValueError`` without both."""
    parts = urlsplit(url)
    key = parts.path.lstrip("/")
    if parts.scheme != "s3" or not parts.netloc or not key:
        raise ValueError(f"not an s3://<bucket>/<key> URL: {parts.scheme}://{parts.netloc}{parts.path}")
    return parts.netloc, key


def sign(
    method: str,
    url: str,
    *,
    access_key: str,
    secret_key: str,
    region: str = DEFAULT_REGION,
    when: datetime | None = None,
    headers: Mapping[str, str] | None = None,
    payload_sha256: str = EMPTY_SHA256,
    service: str = SERVICE,
) -> dict[str, str]:
    """The headers that sign ``method`` on ``url`` (its path already encoded, as ``object_url`` makes it) at
    ``when`` (now by default): ``headers`` (signed too, e.g. a Range), Host, x-amz-date, x-amz-content-sha256 (the
    payload's hash, or ``UNSIGNED_PAYLOAD``) and Authorization. Send them all, Host as given here."""
    at = (when or datetime.now(UTC)).astimezone(UTC)
    stamp, day = at.strftime("%Y%m%dT%H%M%SZ"), at.strftime("%Y%m%d")
    parts = urlsplit(url)
    sent = {
        **(headers or {}),
        "Host": parts.netloc.rpartition("@")[2],
        "x-amz-date": stamp,
        "x-amz-content-sha256": payload_sha256,
    }
    canonical = {name.lower(): " ".join(value.split()) for name, value in sent.items()}
    names = ";".join(sorted(canonical))
    request = "\n".join(
        [
            method.upper(),
            parts.path or "/",
            _query(parts.query),
            *(f"{name}:{canonical[name]}" for name in sorted(canonical)),
            "",
            names,
            payload_sha256,
        ]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join([ALGORITHM, stamp, scope, hashlib.sha256(request.encode()).hexdigest()])
    key = f"AWS4{secret_key}".encode()
    for part in (day, region, service, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    sent["Authorization"] = f"{ALGORITHM} Credential={access_key}/{scope},SignedHeaders={names},Signature={signature}"
    return sent


def _query(query: str) -> str:
    """The canonical query string: each name and value URI-encoded, then sorted by name, then value."""
    pairs = sorted((quote(name, safe=""), quote(value, safe="")) for name, value in parse_qsl(query, True))
    return "&".join(f"{name}={value}" for name, value in pairs)


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()
