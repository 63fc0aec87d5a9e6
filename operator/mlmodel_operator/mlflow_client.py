"""What the operator asks an MLflow tracking server over its REST API (the image has no MLflow client): the version
a registry URI names now, its model file and that file's sha256. Thin: ``registry`` makes sense of the answers.
Artifacts in an S3 store (``s3://``) are read from it with the store's keys, each request signed (``sigv4``).

A version's artifacts never change, so what they hold (the model file's URL and digest, and its ``MLmodel``) is
kept in ``digests``: a version resolved before costs one request, its lookup (a run's: the run).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from mlmodel_operator import registry, sigv4
from mlmodel_operator.registry import Credentials, Pin, Ref, RegistryError, S3Keys, redact

API = "/api/2.0/mlflow"
_CHUNK = 1 << 20  # bytes read at once from a model file
_MLMODEL_BYTES = 1 << 20  # at most: an MLmodel file is a few KiB
_ERROR_BYTES = 64 << 10  # of an error answer, at most


@dataclass(frozen=True)
class _Server:
    tracking: str  # registry.tracking's
    headers: Mapping[str, str]
    timeout: float
    s3: S3Keys | None = None  # what s3:// artifacts are read with

    @contextmanager
    def open(self, url: str, body: Mapping[str, Any] | None = None) -> Iterator[http.client.HTTPResponse]:
        """``url`` answering 200 (a POST of ``body`` as JSON, if any); a refusal or a broken connection raises
        ``RegistryError``, while it is read too. An ``s3://`` URL is a signed GET of the object from its store."""
        s3 = urlsplit(url).scheme == "s3"
        request = self._s3(url) if s3 else self._http(url, body)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                yield answer
        except urllib.error.HTTPError as err:
            raise registry.refusal(err.code, err.read(_ERROR_BYTES), url) from None
        except (OSError, http.client.HTTPException) as err:
            why = err.reason if isinstance(err, urllib.error.URLError) else err
            where = registry.origin(request.full_url)
            where = f"the S3 store {where} (for {redact(url)})" if s3 else where
            raise RegistryError(registry.UNREACHABLE, f"cannot reach {where}: {why}") from None

    def _http(self, url: str, body: Mapping[str, Any] | None) -> urllib.request.Request:
        if urlsplit(url).scheme not in ("http", "https"):
            raise RegistryError(
                registry.UNSUPPORTED_STORE, f"the operator reads artifacts over http(s) or from s3://: {redact(url)}"
            )
        request = urllib.request.Request(url, None if body is None else json.dumps(body).encode())
        if body is not None:
            request.add_header("Content-Type", "application/json")
        for name, value in self.headers.items():  # not to where a redirect leads
            request.add_unredirected_header(name, value)
        return request

    def _s3(self, url: str) -> urllib.request.Request:
        """A GET of the object at ``s3://bucket/key`` from the store's endpoint (path-style), signed with its keys
        (not to where a redirect leads)."""
        if self.s3 is None:
            raise RegistryError(
                registry.CREDENTIALS,
                f"the model's artifacts are in an S3 store ({redact(url)}), which the operator reads with its keys: "
                f"put {registry.S3_KEYS} in the Secret that spec.mlflow.credentialsSecret names (for mlmodel "
                "compose render: in its environment)",
            )
        target = sigv4.object_url(self.s3.endpoint, *sigv4.split(url))
        request = urllib.request.Request(target)
        signed = sigv4.sign(
            "GET",
            target,
            access_key=self.s3.access_key_id,
            secret_key=self.s3.secret_access_key,
            region=self.s3.region,
        )
        for name, value in signed.items():
            request.add_unredirected_header(name, value)
        return request

    @property
    def reader(self) -> str:
        """Who reads the artifacts, as ``digests`` keys them: a digest read from S3 with other keys (or on another
        store) is no proof that these can read the file. The keys' hash, never the keys."""
        if self.s3 is None:
            return ""
        s3 = self.s3
        held = "\n".join((s3.endpoint, s3.region, s3.access_key_id, s3.secret_access_key)).encode()
        return f" s3 {hashlib.sha256(held).hexdigest()[:32]}"

    def api(self, method: str, body: Mapping[str, Any] | None = None, **query: str) -> dict[str, Any]:
        """The answer of the REST API's ``method``: a GET with ``query``, or a POST of ``body``."""
        url = f"{self.tracking}{API}/{method}" + (f"?{urlencode(query)}" if query else "")
        with self.open(url, body) as answer:
            text = answer.read()
        try:
            found: dict[str, Any] = json.loads(text)
        except ValueError:
            raise RegistryError(
                registry.REGISTRY_ERROR, f"{self.tracking} answers no JSON: is it an MLflow tracking server?"
            ) from None
        return found

    def text(self, url: str, limit: int) -> str:
        with self.open(url) as answer:
            data = answer.read(limit + 1)
        if len(data) > limit:
            raise RegistryError(registry.REGISTRY_ERROR, f"{redact(url)} is larger than {limit} bytes")
        return data.decode()

    def sha256(self, url: str) -> str:
        digest = hashlib.sha256()
        with self.open(url) as answer:
            while chunk := answer.read(_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()


def resolve(
    ref: Ref,
    tracking_uri: str,
    credentials: Credentials | None,
    *,
    timeout: float,
    digests: MutableMapping[str, str],
) -> Pin:
    """What ``ref`` names on the tracking server at ``tracking_uri`` now: its sklearn model file and that file's
    sha256, each request within ``timeout`` seconds. Raises ``RegistryError``."""
    s3 = None if credentials is None else credentials.s3
    server = _Server(registry.tracking(tracking_uri), registry.headers(credentials), timeout, s3)
    try:
        if ref.run_id is not None:
            return _run(server, ref, digests)
        return _version(server, ref, digests)
    except (KeyError, TypeError, AttributeError, ValueError) as err:  # an answer unlike MLflow's
        why = f"{type(err).__name__}: {err}"
        raise RegistryError(registry.REGISTRY_ERROR, f"{server.tracking} answers unlike MLflow ({why})") from None


def _version(server: _Server, ref: Ref, digests: MutableMapping[str, str]) -> Pin:
    assert ref.name is not None
    if ref.alias is not None:
        found = registry.version(server.api("registered-models/alias", name=ref.name, alias=ref.alias))
    else:
        found = registry.version(server.api("model-versions/get", name=ref.name, version=str(ref.version)))
    key = f"{server.tracking} models:/{ref.name}/{found.version} {found.source}{server.reader}"
    if key not in digests:
        location = server.api("model-versions/get-download-uri", name=ref.name, version=found.version)
        served = registry.served_version(ref.name, found.version)
        digests[key] = _artifacts(server, location["artifact_uri"], found.source, served)
    return _pin(ref, digests[key], found.version, found.run_id)


def _run(server: _Server, ref: Ref, digests: MutableMapping[str, str]) -> Pin:
    """A run's model: the logged model of that name the run made (MLflow 3), else a directory of its artifacts."""
    assert ref.path is not None
    info = server.api("runs/get", run_id=str(ref.run_id))["run"]["info"]
    key = f"{server.tracking} {ref}{server.reader}"
    if key not in digests:
        name, _, rest = ref.path.partition("/")
        search = {
            "experiment_ids": [info["experiment_id"]],
            "filter": f"name = '{name}' AND source_run_id = '{ref.run_id}'",
            "max_results": 1,
        }
        models = server.api("logged-models/search", search).get("models") or []
        if models:
            location = "/".join(filter(None, (models[0]["info"]["artifact_uri"], rest)))
            served = registry.served_logged_model(models[0]["info"]["model_id"], rest)
        else:
            location = f"{info['artifact_uri']}/{ref.path}"
            served = registry.served_run(str(ref.run_id), ref.path)
        digests[key] = _artifacts(server, location, location, served)
    return _pin(ref, digests[key], None, ref.run_id)


def _artifacts(server: _Server, location: str, source: str, served: registry.Served) -> str:
    """What a model's artifacts at ``location`` hold (read as ``served`` where only the tracking server can), as
    ``digests`` keeps it: its file's URL and sha256, and its MLmodel file."""
    mlmodel = server.text(registry.artifact_url(server.tracking, location, "MLmodel", served), _MLMODEL_BYTES)
    url = registry.artifact_url(server.tracking, location, registry.flavor(mlmodel).file, served)
    return json.dumps({"uri": url, "sha256": server.sha256(url), "source": source, "mlmodel": mlmodel})


def _pin(ref: Ref, kept: str, version: str | None, run_id: str | None) -> Pin:
    artifacts = json.loads(kept)
    flavor = registry.flavor(artifacts["mlmodel"])
    return Pin(
        ref=ref,
        uri=artifacts["uri"],
        sha256=artifacts["sha256"],
        version=version,
        run_id=run_id,
        source=artifacts["source"],
        sklearn_version=flavor.sklearn_version,
        skops_trusted=flavor.skops_trusted,
        input_schema=flavor.input_schema,
    )
