"""An MLflow registry's model URIs and answers, pure: ``models:/<name>/<version>``, ``models:/<name>@<alias>`` and
``runs:/<run_id>/<path>`` parsed, the sklearn flavor read from an ``MLmodel`` file, artifact locations turned into
URLs, and what the operator serves one from (a ``Pin``). ``mlflow_client`` asks the tracking server."""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import yaml

from mlmodel_operator import names, sigv4

ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"  # a tracking server's artifact proxy (--serve-artifacts)
SHAPES = "models:/<name>/<version>, models:/<name>@<alias> or runs:/<run_id>/<artifact path>"
FORMATS = ("pickle", "cloudpickle", "skops")  # the sklearn flavor's serialization formats the server loads
MODEL_NOT_FOUND = "ModelNotFound"
UNREACHABLE = "RegistryUnreachable"
UNAUTHORIZED = "RegistryUnauthorized"
UNSUPPORTED_FLAVOR = "UnsupportedFlavor"
UNSUPPORTED_STORE = "UnsupportedArtifactStore"
CREDENTIALS = "CredentialsUnavailable"  # none to read with, or none that can be used
REGISTRY_ERROR = "RegistryError"  # anything else
# An S3 store's keys, as the AWS SDK's environment names them (and so a Secret's keys, and the servers' env).
S3_KEYS = (
    f"{names.S3_KEY_ID} and {names.S3_SECRET} (and {names.S3_ENDPOINT} for an S3-compatible store other than AWS, "
    f"{names.S3_REGION} for an AWS region other than {sigv4.DEFAULT_REGION})"
)
_ALIAS = re.compile(r"[\w-]+")  # MLflow's own rule for an alias
_RUN_ID = re.compile(r"[a-zA-Z0-9][\w-]{0,255}")  # and for a run's ID
_S3_ERROR = re.compile(r"<Error>.*?</Error>", re.DOTALL)  # an S3 error answer's XML document


class RegistryError(Exception):
    """A registry that cannot pin a model: ``reason`` for a condition (CamelCase), ``message`` the registry's
    own words where it gave some. Never holds credentials."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Ref:
    """A registry modelUri: a registered model's version or alias, or an artifact path of a run (``str``: the URI)."""

    name: str | None = None  # the registered model's
    version: int | None = None
    alias: str | None = None
    run_id: str | None = None
    path: str | None = None  # in the run's artifacts: a logged model's name (and a path in it)

    def __str__(self) -> str:
        if self.run_id is not None:
            return f"runs:/{self.run_id}/{self.path}"
        return f"models:/{self.name}@{self.alias}" if self.alias else f"models:/{self.name}/{self.version}"


def parse(uri: str) -> Ref | None:
    """The registry model ``uri`` names; ``None`` if it is no registry URI (``http://``, ``s3://``, a path...).

    Raises ``ValueError`` for a ``models:`` or ``runs:`` URI of another shape. Names are as free as MLflow's."""
    scheme, colon, rest = uri.partition(":")
    if not colon or scheme.lower() not in ("models", "runs"):
        return None
    if not rest.startswith("/") or rest.startswith("//"):  # models://<profile>/... is a Databricks workspace's
        raise _malformed(uri, "the name comes right after :/")
    if scheme.lower() == "runs":
        run_id, _, path = rest[1:].partition("/")
        segments = path.rstrip("/").split("/")
        if not _RUN_ID.fullmatch(run_id) or any(s in ("", ".", "..") for s in segments):
            raise _malformed(uri, "a run's ID, then the path of the model in the run's artifacts")
        return Ref(run_id=run_id, path="/".join(segments))
    parts = rest[1:].split("/")
    if len(parts) == 2 and parts[0].strip():
        if not parts[1].isdecimal() or int(parts[1]) < 1:
            raise _malformed(uri, "a version is a number from 1; stages and 'latest' are not served, use an alias")
        return Ref(name=parts[0], version=int(parts[1]))
    name, at, alias = parts[0].rpartition("@")
    if len(parts) == 1 and at and name.strip() and _ALIAS.fullmatch(alias):
        return Ref(name=name, alias=alias)
    raise _malformed(uri, "a registered model's name, then /<version> or @<alias>")


def _malformed(uri: str, why: str) -> ValueError:
    return ValueError(f"{uri!r}: {why}; a registry modelUri is {SHAPES}")


def tracking(uri: str) -> str:
    """The tracking server at ``uri``, ``http(s)://host[:port][/prefix]``, as requests are built on it."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RegistryError(REGISTRY_ERROR, f"the tracking URI is an http:// or https:// URL, got {origin(uri)}")
    if "@" in parts.netloc:
        raise RegistryError(
            REGISTRY_ERROR, f"{origin(uri)}: credentials go in spec.mlflow.credentialsSecret, not the tracking URI"
        )
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: no credentials, path or query."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def redact(url: str) -> str:
    """``url`` fit for a message: no credentials, query (presigned URLs, tokens) or fragment."""
    return f"{origin(url)}{urlsplit(url).path}"


def refusal(status: int, body: bytes, url: str) -> RegistryError:
    """What an error answer of a tracking server (or an artifact store) at ``url`` means, in its own words where
    it has some: a JSON error's message, an S3 error's code and message, or a line of plain text."""
    where = f"HTTP {status} from {redact(url)}"
    code, words, s3 = _said(body)
    if status in (401, 403):
        return RegistryError(UNAUTHORIZED, f"{where}: {words}" if words else where)
    missing = code in ("RESOURCE_DOES_NOT_EXIST", "NoSuchKey", "NoSuchBucket") or (
        code == "INVALID_PARAMETER_VALUE" and "not found" in words
    )
    reason = MODEL_NOT_FOUND if status == 404 or missing else REGISTRY_ERROR
    return RegistryError(reason, f"{where}: {words}" if s3 else words or where)  # S3's words name no object


def _said(body: bytes) -> tuple[str, str, bool]:
    """An error answer's code and words, and whether an S3 store gave them: MLflow's JSON error, an S3 error's XML
    (its code and message, never its other fields: AWS's name the access key and the string signed), or a line of
    plain text (an HTML page says nothing of use)."""
    text = body.decode(errors="replace").strip()
    try:
        said = json.loads(body)
        return str(said.get("error_code", "")), str(said["message"]), False
    except (ValueError, TypeError, KeyError, AttributeError):
        pass
    if _S3_ERROR.search(text):
        code = _element(text, "Code")
        return code, ": ".join(filter(None, (code, _element(text, "Message")))), True
    return "", "" if text.startswith("<") else text.partition("\n")[0][:300], False


def _element(xml: str, name: str) -> str:
    """The text of the first ``<name>`` element of ``xml``, its entities decoded, on one line."""
    found = re.search(rf"<{name}>([^<]*)</{name}>", xml)
    return " ".join(html.unescape(found[1]).split())[:300] if found else ""


class Version(NamedTuple):
    """A registered model's version, as the registry answers a lookup."""

    version: str
    source: str  # where its artifacts are, e.g. models:/m-<id>
    run_id: str | None


def version(answer: Mapping[str, Any]) -> Version:
    """The version in a lookup's ``answer`` (``{"model_version": ...}``); raises ``RegistryError`` unless it is
    READY."""
    found = answer["model_version"]
    status = found.get("status", "READY")
    if status != "READY":
        why = f": {found['status_message']}" if found.get("status_message") else ""
        raise RegistryError(
            REGISTRY_ERROR, f"version {found['version']} of {found['name']} is {status}, not READY{why}"
        )
    return Version(str(found["version"]), str(found.get("source", "")), found.get("run_id") or None)


@dataclass(frozen=True)
class S3Keys:
    """An S3 (or S3-compatible) store's access key, which the operator signs its reads of ``s3://`` artifacts with,
    and where the store is."""

    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    endpoint_url: str | None = None  # an S3-compatible store's (MinIO, Ceph...); else AWS's own, of the region
    region: str = sigv4.DEFAULT_REGION

    @property
    def endpoint(self) -> str:
        return self.endpoint_url or sigv4.aws_endpoint(self.region)


@dataclass(frozen=True)
class Credentials:
    """How to sign in to a tracking server: a bearer token, or a user name and password (HTTP Basic); and to the
    S3 store its artifacts are in."""

    token: str | None = field(default=None, repr=False)
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    s3: S3Keys | None = None


def s3_keys(values: Mapping[str, str], where: str) -> S3Keys | None:
    """The S3 keys ``values`` hold (a Secret's data, or an environment: the AWS SDK's names), ``None`` without any.
    Raises ``RegistryError`` for half a pair or an endpoint that is no URL, naming ``where`` they are, never what
    they hold."""
    key_id, secret = values.get(names.S3_KEY_ID) or None, values.get(names.S3_SECRET) or None
    if key_id is None and secret is None:
        return None
    if key_id is None or secret is None:
        has, lacks = (names.S3_KEY_ID, names.S3_SECRET) if secret is None else (names.S3_SECRET, names.S3_KEY_ID)
        raise RegistryError(CREDENTIALS, f"{where} has {has} but no {lacks}: an S3 store takes both")
    endpoint = values.get(names.S3_ENDPOINT) or None
    if endpoint is not None:
        try:
            parts = urlsplit(endpoint)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:
            valid = False
        if not valid or "@" in parts.netloc or parts.query or parts.fragment:
            raise RegistryError(
                CREDENTIALS,
                f"{where}: {names.S3_ENDPOINT} is the S3 store's http:// or https:// URL, e.g. http://minio:9000",
            )
        endpoint = endpoint.rstrip("/")
    return S3Keys(key_id, secret, endpoint, values.get(names.S3_REGION) or sigv4.DEFAULT_REGION)


def headers(credentials: Credentials | None) -> dict[str, str]:
    """The ``Authorization`` header ``credentials`` sign requests to the tracking server with (none without)."""
    if credentials is None:
        return {}
    if credentials.token is not None:
        return {"Authorization": f"Bearer {credentials.token}"}
    if credentials.username is None and credentials.password is None:
        return {}  # an S3 store's keys alone
    pair = f"{credentials.username or ''}:{credentials.password or ''}".encode()
    return {"Authorization": f"Basic {base64.b64encode(pair).decode()}"}


class Flavor(NamedTuple):
    """What an ``MLmodel`` file says of its sklearn flavor."""

    file: str  # the model file, beside MLmodel
    serialization_format: str  # one of FORMATS
    sklearn_version: str | None
    skops_trusted: tuple[str, ...]  # the types a skops file may hold beyond skops' defaults
    input_schema: str | None  # the signature's inputs (JSON), if it has one


def flavor(mlmodel: str) -> Flavor:
    """The sklearn flavor of the ``MLmodel`` file ``mlmodel``; raises ``RegistryError`` without one."""
    try:
        doc = yaml.safe_load(mlmodel)
    except yaml.YAMLError:
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("flavors"), dict):
        raise RegistryError(REGISTRY_ERROR, "the model's MLmodel file is not an MLflow model's: it has no flavors")
    flavors: dict[str, Any] = doc["flavors"]
    sklearn: dict[str, Any] = flavors["sklearn"] if isinstance(flavors.get("sklearn"), dict) else {}
    form = str(sklearn.get("serialization_format", "pickle"))
    if not sklearn or form not in FORMATS:
        has = ", ".join(f"sklearn ({form})" if name == "sklearn" else str(name) for name in flavors) or "none"
        raise RegistryError(
            UNSUPPORTED_FLAVOR, f"we serve the sklearn flavor (pickle, cloudpickle or skops); this model has: {has}"
        )
    file = str(sklearn.get("pickled_model", ""))
    if file.startswith("/") or any(s in ("", ".", "..") for s in file.split("/")):
        raise RegistryError(REGISTRY_ERROR, f"the sklearn flavor's pickled_model is no file beside MLmodel: {file!r}")
    inputs = (doc.get("signature") or {}).get("inputs")
    version = sklearn.get("sklearn_version")
    return Flavor(
        file=file,
        serialization_format=form,
        sklearn_version=None if version is None else str(version),
        skops_trusted=tuple(str(t) for t in sklearn.get("skops_trusted_types") or ()),
        input_schema=None if inputs is None else str(inputs),
    )


@dataclass(frozen=True)
class Served:
    """How the tracking server itself serves a file of a model's artifacts (the routes its UI downloads them by),
    for a store that only it can read: a path on its own volume, such as a PVC (``--no-serve-artifacts
    --default-artifact-root /mnt/artifacts``). ``route`` with ``query`` names the artifacts, ``key`` the file,
    under ``prefix``."""

    route: str
    query: tuple[tuple[str, str], ...]
    key: str
    prefix: str = ""

    def url(self, tracking: str, file: str) -> str:
        """The file's URL, its name as the fragment (the servers name their download after it)."""
        path = "/".join(part for part in (self.prefix.strip("/"), file) if part)
        query = urlencode([*self.query, (self.key, path)])
        return f"{tracking}{self.route}?{query}#{quote(file.rsplit('/', 1)[-1])}"


def served_version(name: str, version: str) -> Served:
    """A registered model version's artifacts, as the tracking server serves them."""
    return Served("/model-versions/get-artifact", (("name", name), ("version", version)), "path")


def served_logged_model(model_id: str, prefix: str = "") -> Served:
    """A logged model's artifacts (MLflow 3), as the tracking server serves them."""
    return Served(
        f"/ajax-api/2.0/mlflow/logged-models/{quote(model_id)}/artifacts/files", (), "artifact_file_path", prefix
    )


def served_run(run_id: str, prefix: str) -> Served:
    """A run's artifacts under ``prefix``, as the tracking server serves them."""
    return Served("/get-artifact", (("run_id", run_id),), "path", prefix)


def artifact_url(tracking_uri: str, artifact_uri: str, file: str, served: Served | None = None) -> str:
    """The URL of ``file`` under ``artifact_uri`` (a version's or a run's artifacts): through the tracking server's
    artifact proxy for ``mlflow-artifacts:`` (as MLflow resolves it), the store's own ``s3://`` or ``http(s)://``
    URL, or for a path that only the tracking server can read, its own route (``served``)."""
    parts = urlsplit(artifact_uri)
    if parts.scheme == "mlflow-artifacts":
        tracking = urlsplit(tracking_uri)
        base = f"{tracking.scheme}://{parts.netloc or tracking.netloc}{tracking.path.rstrip('/')}{ARTIFACTS_API}"
        return "/".join([base, *(quote(part) for part in (parts.path.strip("/"), file) if part)])
    if parts.scheme in ("s3", "http", "https"):
        return f"{artifact_uri.rstrip('/')}/{quote(file)}"
    if parts.scheme in ("", "file") and served is not None:
        return served.url(tracking_uri.rstrip("/"), file)
    raise RegistryError(
        UNSUPPORTED_STORE,
        f"the artifacts are at {artifact_uri}, which the cluster cannot read: serve them through the tracking "
        "server (mlflow server --serve-artifacts, mlflow-artifacts:/), keep them on a path it reads, or store them "
        "in s3:// or http(s)://",
    )


@dataclass(frozen=True)
class Pin:
    """What a registry URI resolved to: the model file the server downloads, its digest, and where it came from."""

    ref: Ref  # what was resolved
    uri: str  # the model file's own http(s):// or s3:// URL
    sha256: str
    version: str | None  # the registered model's version (None for runs:/)
    run_id: str | None
    source: str  # where the registry says the artifacts are, e.g. models:/m-<id>
    sklearn_version: str | None
    skops_trusted: tuple[str, ...] = ()
    input_schema: str | None = None  # the signature's inputs (JSON)

    def describe(self) -> str:
        """``iris@champion → v7``, ``iris/3 → v3`` or ``runs:/3f2a9c1d…/model``."""
        ref = self.ref
        if ref.run_id is not None:
            run = ref.run_id if len(ref.run_id) <= 8 else f"{ref.run_id[:8]}…"
            return f"runs:/{run}/{ref.path}"
        written = f"{ref.name}@{ref.alias}" if ref.alias else f"{ref.name}/{ref.version}"
        return f"{written} → v{self.version}"
