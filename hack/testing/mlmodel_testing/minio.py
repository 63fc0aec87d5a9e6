"""A real S3-compatible store on loopback: a MinIO server (``make minio`` builds it and links it into .venv/bin), with
one bucket, reached with the AWS SDK's environment variables as a pod gets them from a Secret. The server's
``s3://`` downloads (``server/tests/test_s3.py``) and the operator's reads of a registry's S3 artifacts
(``operator/tests/test_mlflow_s3.py``) run on it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mlmodel_testing.cluster import REPO, free_port

if TYPE_CHECKING:
    import s3fs

MINIO = REPO / ".venv" / "bin" / "minio"
USER, SECRET = "mlmodel", "s3cr3t-from-a-secretKeyRef"  # its root user's: the access key ID and secret key
BUCKET = "models"
START_SECONDS = 120.0  # about a second, but on a loaded CI machine


@dataclass(frozen=True)
class Store:
    """A running MinIO server: its endpoint, its keys, and the bucket it holds."""

    endpoint: str
    user: str = USER
    secret: str = field(default=SECRET, repr=False)
    bucket: str = BUCKET

    def env(self, secret: str | None = None) -> dict[str, str]:
        """The AWS SDK's variables that reach the store (with another ``secret``, if given)."""
        return {
            "AWS_ACCESS_KEY_ID": self.user,
            "AWS_SECRET_ACCESS_KEY": self.secret if secret is None else secret,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def filesystem(self) -> s3fs.S3FileSystem:
        """An s3fs client of the store, of its own (s3fs caches its clients, with their keys)."""
        import s3fs  # imported here: the modules that import this one need not have it

        return s3fs.S3FileSystem(
            key=self.user, secret=self.secret, endpoint_url=self.endpoint, skip_instance_cache=True
        )

    def put(self, local: Path, key: str) -> str:
        """``local`` (a file or a directory) uploaded as ``key`` of the bucket: its ``s3://`` URI."""
        self.filesystem().put(str(local), f"{self.bucket}/{key}", recursive=local.is_dir())
        return f"s3://{self.bucket}/{key}"


@contextlib.contextmanager
def minio(workdir: Path) -> Iterator[Store]:
    """A MinIO server on a free loopback port, keeping its data in ``workdir``, with an empty bucket, until the block
    ends. Its log (``workdir/minio.log``) is the failure's message if it does not start."""
    if not MINIO.is_file():
        raise AssertionError(f"no MinIO server at {MINIO}: run `make minio`")
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "MINIO_ROOT_USER": USER, "MINIO_ROOT_PASSWORD": SECRET}
    argv = [str(MINIO), "server", str(data), "--address", f"127.0.0.1:{port}", "--console-address", "127.0.0.1:0"]
    log = workdir / "minio.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    store = Store(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + START_SECONDS
        while not _live(store.endpoint):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        store.filesystem().mkdir(store.bucket)
        yield store
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _live(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/minio/health/live", timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False
