"""AWS Signature Version 4 for S3 (``sigv4``), pure: AWS's published GET Object example signed to the letter, what
changes its signature, and s3:// URLs as path-style URLs on an endpoint."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from mlmodel_operator import sigv4

# AWS's example (Amazon S3 API reference, "Signature Calculations for the Authorization Header: Transferring Payload
# in a Single Chunk", Example: GET Object): the first 10 bytes of test.txt in examplebucket, with the documentation's
# example keys, signed with the hash of the empty payload.
ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
WHEN = datetime(2013, 5, 24, tzinfo=UTC)
URL = "https://examplebucket.s3.amazonaws.com/test.txt"
SIGNATURE = "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
AUTHORIZATION = (
    "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
    f"SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature={SIGNATURE}"
)


def _example(method: str = "GET", url: str = URL, **changed: Any) -> dict[str, str]:
    """AWS's example request signed, with ``changed`` in place of its own options."""
    options = {"access_key": ACCESS_KEY, "secret_key": SECRET_KEY, "region": "us-east-1", "when": WHEN}
    return sigv4.sign(method, url, **{**options, "headers": {"Range": "bytes=0-9"}, **changed})


def test_aws_s_get_object_example_is_signed_as_published() -> None:
    assert _example() == {
        "Range": "bytes=0-9",
        "Host": "examplebucket.s3.amazonaws.com",
        "x-amz-date": "20130524T000000Z",
        "x-amz-content-sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "Authorization": AUTHORIZATION,
    }


def test_the_time_is_taken_in_utc() -> None:
    paris = WHEN.astimezone(timezone(timedelta(hours=2)))
    assert _example(when=paris)["Authorization"] == AUTHORIZATION


@pytest.mark.parametrize(
    "changed",
    [
        {"secret_key": SECRET_KEY.replace("/", "+")},
        {"region": "eu-west-1"},
        {"when": WHEN + timedelta(seconds=1)},
        {"method": "HEAD"},
        {"url": "https://examplebucket.s3.amazonaws.com/test.txt2"},
        {"url": "https://examplebucket.s3.amazonaws.com:8443/test.txt"},
        {"url": f"{URL}?versionId=2"},
        {"headers": {"Range": "bytes=0-10"}},
        {"payload_sha256": sigv4.UNSIGNED_PAYLOAD},
    ],
)
def test_any_part_of_the_request_changes_the_signature(changed: dict[str, Any]) -> None:
    assert _example(**changed)["Authorization"].rpartition("Signature=")[2] != SIGNATURE


def test_the_secret_is_in_no_header() -> None:
    assert not [value for value in _example().values() if SECRET_KEY in value or "EXAMPLEKEY" in value]


def test_a_query_is_signed_sorted_and_encoded() -> None:
    one = _example(url=f"{URL}?b=2&a=x%20y&a=1")["Authorization"]
    assert one == _example(url=f"{URL}?a=1&a=x+y&b=2")["Authorization"]


@pytest.mark.parametrize(
    ("endpoint", "bucket", "key", "url"),
    [
        (
            "http://127.0.0.1:9000",
            "models",
            "0/models/m-1/artifacts/MLmodel",
            "http://127.0.0.1:9000/models/0/models/m-1/artifacts/MLmodel",
        ),
        ("https://minio.example/s3/", "b", "a b/c+d~e.pkl", "https://minio.example/s3/b/a%20b/c%2Bd~e.pkl"),
        (sigv4.aws_endpoint("eu-west-1"), "b", "k", "https://s3.eu-west-1.amazonaws.com/b/k"),
    ],
)
def test_an_object_s_url_is_path_style_on_the_endpoint(endpoint: str, bucket: str, key: str, url: str) -> None:
    assert sigv4.object_url(endpoint, bucket, key) == url


def test_an_s3_url_is_a_bucket_and_a_key() -> None:
    assert sigv4.split("s3://models/0/m-1/artifacts/model.pkl") == ("models", "0/m-1/artifacts/model.pkl")
    for url in ("s3://models", "s3://models/", "s3:///key", "https://models/key"):
        with pytest.raises(ValueError, match="not an s3://<bucket>/<key> URL"):
            sigv4.split(url)
