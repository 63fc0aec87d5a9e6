#!/usr/bin/env python3
"""JSON schemas of the Kubernetes API for kubeconform, made offline.

kubeconform's usual schemas are downloaded from GitHub, which cannot be reached here. The same
information ships inside the pinned ``k8s.io/kubernetes`` Go module, the one the test cluster is
built from: ``api/openapi-spec/swagger.json``, the OpenAPI v2 document its API server serves at
``/openapi/v2``. This turns each of its kinds into one strict, self-contained JSON schema
(unknown fields refused, ``$ref`` kept local to the file), laid out for kubeconform's
``-schema-location`` template ``SCHEMA_LOCATION``.

    python3 hack/kubeschemas.py OUTDIR   # write the schemas (swagger.json via `go mod download`)
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cluster.mlcluster import versions  # hack/cluster's harness, reached as a namespace package from hack/

SCHEMA_LOCATION = "{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"
# Kubernetes' own spellings that plain JSON schema types cannot say.
SPECIAL = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {"oneOf": [{"type": "string"}, {"type": "number"}]},
}
Schema = dict[str, Any]


def _strict(node: Any) -> Any:
    """A copy in which every object with properties refuses unknown ones."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield ref.removeprefix("#/definitions/")
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _closure(name: str, definitions: dict[str, Schema]) -> list[str]:
    seen: dict[str, None] = {}
    todo = [name]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen[current] = None
            todo.extend(_refs(definitions[current]))
    return list(seen)


def schemas(swagger: dict[str, Any]) -> dict[str, Schema]:
    """Relative path (for ``SCHEMA_LOCATION``) -> schema, for every kind of the document."""
    definitions = {name: SPECIAL.get(name, _strict(d)) for name, d in swagger["definitions"].items()}
    out: dict[str, Schema] = {}
    for name, definition in swagger["definitions"].items():
        for gvk in definition.get("x-kubernetes-group-version-kind", []):
            group = gvk["group"] or gvk["version"]  # kubeconform's Group of "v1" is "v1"
            path = f"{group}/{gvk['kind'].lower()}_{gvk['version']}.json"
            needed = _closure(name, definitions)
            out[path] = {
                **definitions[name],
                "definitions": {n: definitions[n] for n in needed},
            }
    return out


def swagger_path() -> Path:
    """swagger.json of the pinned Kubernetes module, downloaded through the Go module proxy."""
    module = f"k8s.io/kubernetes@{versions.KUBERNETES}"
    found = subprocess.run(["go", "mod", "download", "-json", module], capture_output=True, text=True, check=True)
    return Path(json.loads(found.stdout)["Dir"]) / "api" / "openapi-spec" / "swagger.json"


def write(outdir: Path) -> None:
    """Write every schema under ``outdir``."""
    for path, schema in schemas(json.loads(swagger_path().read_text())).items():
        target = outdir / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(schema))


if __name__ == "__main__":
    write(Path(sys.argv[1]))
