"""A ModelDeployment checked against the CRD's structural schema, as the API server checks it with strict field
validation, for where no API server is (``mlmodel compose``). Pure.

The schema is the CRD's own (``schema.json``, which ``hack/chart.py`` writes from ``crds/``). Its CEL rules cannot be
evaluated here (they use Kubernetes' own CEL functions): ``rules`` checks what those that ``spec.parse`` does not
check refuse, with their messages, at the fields the API server names. Messages follow the API server's:
``spec.variants[0].weight: Invalid value: 101: spec.variants[0].weight in body should be less than or equal to 100``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from functools import cache
from importlib import resources
from typing import Any

from mlmodel_operator import names, quantity

SCHEMA = "schema.json"
_GATES = (  # spec.rollout.analysis's: one at least
    *("minSuccessRate", "maxP99LatencyMs", "maxP99LatencyRatio", "prometheus"),
    *("agreement", "probabilityDelta", "predictionDrift"),
)
_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


@cache
def crd_schema() -> dict[str, Any]:
    """The served version's ``openAPIV3Schema``."""
    return dict(json.loads(resources.files("mlmodel_operator").joinpath(SCHEMA).read_text()))


def errors(body: Mapping[str, Any], schema: Mapping[str, Any] | None = None) -> list[str]:
    """What the API server would refuse in ``body``'s ``spec``, one message a field (none: it passes)."""
    root = schema or crd_schema()
    spec = root["properties"]["spec"]
    if "spec" not in body:
        return ["spec: Required value"]
    return list(_check(body["spec"], spec, "spec"))


def _check(value: Any, schema: Mapping[str, Any], path: str) -> Iterator[str]:
    if value is None and schema.get("nullable"):
        return
    kind = schema.get("type")
    if schema.get("x-kubernetes-int-or-string") or "anyOf" in schema:
        if isinstance(value, bool) or not isinstance(value, int | str):
            yield f"{path}: Invalid value: {_shown(value)}: must be an integer or a string"
        if not isinstance(value, str):
            return
        kind = "string"
    if kind is not None and not _is(value, kind):
        found = _type_name(value)
        yield f'{path}: Invalid value: "{found}": {path} in body must be of type {kind}: "{found}"'
        return
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(f'"{v}"' for v in schema["enum"])
        yield f"{path}: Unsupported value: {_shown(value)}: supported values: {supported}"
    if kind == "object":
        yield from _object(value, schema, path)
    elif kind == "array":
        yield from _array(value, schema, path)
    elif kind == "string":
        yield from _string(value, schema, path)
    elif kind in ("integer", "number"):
        yield from _number(value, schema, path)


def _object(value: Mapping[str, Any], schema: Mapping[str, Any], path: str) -> Iterator[str]:
    properties = schema.get("properties") or {}
    for name in schema.get("required") or ():
        if name not in value:
            yield f"{path}.{name}: Required value"
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        yield f"{path}: Too many: {len(value)}: must have at most {schema['maxProperties']} items"
    extra = schema.get("additionalProperties")
    for name, item in value.items():
        where = f"{path}.{name}"
        if name in properties:
            yield from _check(item, properties[name], where)
        elif isinstance(extra, Mapping):
            yield from _check(item, extra, where)
        elif not schema.get("x-kubernetes-preserve-unknown-fields") and extra is not True:
            yield f'strict decoding error: unknown field "{where}"'


def _array(value: list[Any], schema: Mapping[str, Any], path: str) -> Iterator[str]:
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        yield f"{path}: Too many: {len(value)}: must have at most {schema['maxItems']} items"
    if "minItems" in schema and len(value) < schema["minItems"]:
        yield f"{path}: Invalid value: {len(value)}: {path} in body should have at least {schema['minItems']} items"
    items = schema.get("items")
    keys = schema.get("x-kubernetes-list-map-keys") if schema.get("x-kubernetes-list-type") == "map" else None
    seen: set[str] = set()
    for i, item in enumerate(value):
        if isinstance(items, Mapping):
            yield from _check(item, items, f"{path}[{i}]")
        if keys and isinstance(item, Mapping):
            key = json.dumps({k: item.get(k) for k in keys}, separators=(",", ":"))
            if key in seen:
                yield f"{path}[{i}]: Duplicate value: {key}"
            seen.add(key)


def _string(value: str, schema: Mapping[str, Any], path: str) -> Iterator[str]:
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        yield f"{path}: Too long: may not be more than {schema['maxLength']} bytes"
    if "minLength" in schema and len(value) < schema["minLength"]:
        least = schema["minLength"]
        yield f"{path}: Invalid value: {_shown(value)}: {path} in body should be at least {least} chars long"
    if "pattern" in schema and re.search(schema["pattern"], value) is None:
        yield f"{path}: Invalid value: {_shown(value)}: {path} in body should match '{schema['pattern']}'"


def _number(value: float, schema: Mapping[str, Any], path: str) -> Iterator[str]:
    if "minimum" in schema and value < schema["minimum"]:
        yield f"{path}: Invalid value: {value}: {path} in body should be greater than or equal to {schema['minimum']}"
    if "maximum" in schema and value > schema["maximum"]:
        yield f"{path}: Invalid value: {value}: {path} in body should be less than or equal to {schema['maximum']}"


def _is(value: Any, kind: str) -> bool:
    if isinstance(value, bool):
        return kind == "boolean"
    if kind == "number" and isinstance(value, int | float):
        return True
    return isinstance(value, _TYPES.get(kind, (object,)))


def _type_name(value: Any) -> str:
    for name, types in _TYPES.items():
        if isinstance(value, bool):
            return "boolean"
        if isinstance(value, types):
            return name
    return "null" if value is None else type(value).__name__


def _shown(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str | int | float | bool) or value is None else str(value)


def rules(body: Mapping[str, Any]) -> list[str]:
    """What the CRD's CEL rules refuse that ``spec.parse`` does not check, for a ``body`` the schema takes."""
    found: list[str] = []
    name = str(body["metadata"]["name"])
    if len(name) > 56:
        found.append(f"metadata.name: Invalid value: {_shown(name)}: metadata.name must be at most 56 characters")
    if re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) is None:
        found.append(
            f"metadata.name: Invalid value: {_shown(name)}: metadata.name must start with a lowercase letter and "
            "contain only lowercase letters, digits and '-'"
        )
    spec = body["spec"]
    variants = spec.get("variants") or []
    if any(len(name) + 1 + len(str(v.get("name", ""))) > 63 for v in variants):
        found.append(
            "spec.variants: Invalid value: metadata.name + '-' + spec.variants[].name must be at most 63 characters "
            "(child objects are named that way)"
        )
    for i, variant in enumerate(variants):
        found += _variant_rules(variant, f"spec.variants[{i}]")
    found += _bytes_rule(spec.get("maxRequestSize"), "spec.maxRequestSize", 1 << 10, 1 << 30, "from 1Ki to 1Gi")
    routing = spec.get("routing") or {}
    mirror = routing.get("mirror") or {}
    found += _bytes_rule(mirror.get("bufferSize"), "spec.routing.mirror.bufferSize", 1, 64 << 20, "above 0 up to 64Mi")
    found += _requests_rule(routing.get("resources") or {}, "spec.routing.resources")
    rollout = spec.get("rollout") or {}
    for i, step in enumerate(rollout.get("steps") or ()):
        if sum(key in step for key in ("setWeight", "pause", "shadow")) != 1:
            found.append(f"spec.rollout.steps[{i}]: Invalid value: each step is either shadow, setWeight or pause")
    analysis = rollout.get("analysis")
    if analysis is not None and not any(gate in analysis for gate in _GATES):
        found.append(f"spec.rollout.analysis: Invalid value: set at least one of {', '.join(_GATES)}")
    prometheus = (analysis or {}).get("prometheus")
    if prometheus is not None and "min" not in prometheus and "max" not in prometheus:
        found.append("spec.rollout.analysis.prometheus: Invalid value: set min, max or both")
    mlflow = spec.get("mlflow") or {}
    tracking = mlflow.get("trackingUri")
    if tracking is not None and not str(tracking).startswith(("http://", "https://")):
        found.append(f"spec.mlflow.trackingUri: Invalid value: {_shown(tracking)}: must be an http:// or https:// URL")
    return found


def _variant_rules(variant: Mapping[str, Any], where: str) -> list[str]:
    found = []
    if variant.get("name") == names.COMPONENT_ROUTER:
        found.append(f"{where}.name: Invalid value: 'router' is reserved (the router's objects are named so)")
    uri = str(variant.get("modelUri", ""))
    if not uri.startswith(("file://", "http://", "https://", "s3://", "pvc://", "models:/", "runs:/")):
        found.append(
            f"{where}.modelUri: Invalid value: {_shown(uri)}: modelUri must start with one of file://, http://, "
            "https://, s3://, pvc://, models:/, runs:/"
        )
    scaling = variant.get("autoscaling") or {}
    if scaling.get("minReplicas", 1) > scaling.get("maxReplicas", float("inf")):
        found.append(
            f"{where}.autoscaling.minReplicas: Invalid value: autoscaling.minReplicas must not exceed "
            "autoscaling.maxReplicas"
        )
    found += _bytes_rule(variant.get("modelCacheSize"), f"{where}.modelCacheSize", 1, 1 << 60, "above 0 up to 1Ei")
    found += _requests_rule(variant.get("resources") or {}, f"{where}.resources")
    for j, entry in enumerate(variant.get("env") or ()):
        if "value" in entry and "valueFrom" in entry:
            found.append(f"{where}.env[{j}]: Forbidden: env[].value and env[].valueFrom are mutually exclusive")
        sources = ("secretKeyRef", "configMapKeyRef", "fieldRef", "resourceFieldRef")
        if "valueFrom" in entry and sum(key in entry["valueFrom"] for key in sources) != 1:
            found.append(f"{where}.env[{j}].valueFrom: Invalid value: set exactly one of {', '.join(sources)}")
    return found


def _bytes_rule(value: Any, where: str, low: int, high: int, bounds: str) -> list[str]:
    if value is None:
        return []
    size = quantity.parse(value)
    if size is None or not low <= size <= high:
        return [f"{where}: Invalid value: {_shown(value)}: must be a quantity of bytes {bounds}"]
    return []


def _requests_rule(resources: Mapping[str, Any], where: str) -> list[str]:
    key = quantity.over_limit(resources)
    if key is not None:
        return [f"{where}.requests: Invalid value: requests must not exceed limits of the same resource ({key})"]
    return []
