"""ModelDeployments that break the CRD's schema, generated with hypothesis from the schema itself.

Every node of ``spec``'s schema is a site. A case takes a valid ModelDeployment and, at one site,
puts a value that breaks one of that node's constraints (type, minimum/maximum, length, pattern,
enum, item or property counts, a required field removed, a field the schema does not know). The
case carries the field path the API server's refusal must name, as kubectl prints it
(``spec.variants[0].weight``).
"""

from __future__ import annotations

import copy
import functools
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml
from hypothesis import strategies as st
from mlmodel_operator import names

from conftest import CRD

Where = tuple[str | int, ...]


@dataclass(frozen=True)
class Site:
    path: Where  # from the ModelDeployment's root: ("spec", "variants", 0, "weight")
    schema: dict[str, Any]


@dataclass(frozen=True)
class Case:
    body: dict[str, Any]
    field: str  # what the refusal must name
    what: str  # which constraint is broken, for the report


@functools.cache
def spec_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


def sites(schema: dict[str, Any], path: Where = ("spec",)) -> Iterator[Site]:
    """Every node under ``schema``: object properties, an array's first item, a map's entry ``k1``."""
    yield Site(path, schema)
    for key, sub in (schema.get("properties") or {}).items():
        yield from sites(sub, (*path, key))
    if isinstance(schema.get("additionalProperties"), dict):
        yield from sites(schema["additionalProperties"], (*path, "k1"))
    if "items" in schema:
        yield from sites(schema["items"], (*path, 0))


def field(path: Where) -> str:
    """``("spec", "variants", 0, "weight")`` -> ``spec.variants[0].weight``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def base(name: str, namespace: str) -> dict[str, Any]:
    """A valid two-variant ModelDeployment."""
    digest = "0" * 64
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "variants": [
                {"name": "stable", "modelUri": "http://model-store/iris.joblib", "modelSha256": digest, "weight": 90},
                {"name": "canary", "modelUri": "http://model-store/iris.joblib", "modelSha256": digest, "weight": 10},
            ]
        },
    }


def put(body: dict[str, Any], path: Where, value: Any) -> None:
    """Set ``value`` at ``path``, making the dicts and lists on the way."""
    node: Any = body
    for here, after in itertools.pairwise(path):
        if isinstance(here, int):
            while len(node) <= here:
                node.append({} if isinstance(after, str) else [])
            node = node[here]
        else:
            node = node.setdefault(here, [] if isinstance(after, int) else {})
    last = path[-1]
    if isinstance(last, int):
        while len(node) <= last:
            node.append(None)
    node[last] = value


def get(body: dict[str, Any], path: Where) -> Any:
    node: Any = body
    for part in path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


_TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
_OTHER_TYPES: dict[str, st.SearchStrategy[Any]] = {
    "string": st.integers() | st.booleans() | st.lists(st.integers(), max_size=2),
    "integer": _TEXT | st.booleans() | st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: f != int(f)),
    "boolean": _TEXT.filter(lambda s: s not in ("true", "false")) | st.integers(),
    "array": _TEXT | st.integers() | st.dictionaries(_TEXT, st.integers(), max_size=2),
    "object": _TEXT | st.integers() | st.lists(st.integers(), max_size=2),
}
_INT_OR_STRING = st.booleans() | st.lists(st.integers(), max_size=2) | st.dictionaries(_TEXT, _TEXT, max_size=2)


def breaks(site: Site, body: dict[str, Any]) -> list[tuple[str, Where, st.SearchStrategy[Any] | None]]:
    """Each constraint of ``site`` that a value can break: (what, where, the values that break it).
    ``None`` values: the field is removed (a required one)."""
    s, path = site.schema, site.path
    out: list[tuple[str, Where, st.SearchStrategy[Any] | None]] = []
    kind = s.get("type")
    if s.get("x-kubernetes-int-or-string"):
        out.append(("type", path, _INT_OR_STRING))
    elif kind in _OTHER_TYPES:
        out.append(("type", path, _OTHER_TYPES[kind]))
    if kind == "integer":
        if "minimum" in s:
            out.append(("minimum", path, st.integers(-(2**31), s["minimum"] - 1)))
        if "maximum" in s:
            out.append(("maximum", path, st.integers(s["maximum"] + 1, 2**31 - 1)))
    if kind == "string":
        if "maxLength" in s:
            too_long = st.integers(s["maxLength"] + 1, s["maxLength"] + 8).map(lambda n: "a" * n)
            out.append(("maxLength", path, too_long))
        if s.get("minLength", 0) > 0:
            out.append(("minLength", path, st.just("")))
        if "enum" in s:
            out.append(("enum", path, _TEXT.filter(lambda v: v not in s["enum"])))
    if "pattern" in s and (kind == "string" or s.get("x-kubernetes-int-or-string")):
        pattern = re.compile(s["pattern"])
        out.append(("pattern", path, _TEXT.filter(lambda v: pattern.search(v) is None)))
    if kind == "array":
        item = get(body, (*path, 0))
        if "maxItems" in s and item is not None:
            out.append(("maxItems", path, st.just([_renamed(item, k) for k in range(s["maxItems"] + 1)])))
        if s.get("minItems", 0) > 0:
            out.append(("minItems", path, st.just([])))
    if kind == "object":
        known = set(s.get("properties") or {})
        if known and "additionalProperties" not in s:
            unknown = _TEXT.map(lambda v: "x" + re.sub(r"[^A-Za-z0-9]", "", v)).filter(lambda v: v not in known)
            out.append(("unknown field", path, unknown))  # the value is the key of the field added
        if "maxProperties" in s:
            many = {f"k{k}": "1" for k in range(s["maxProperties"] + 1)}
            out.append(("maxProperties", path, st.just(many)))
        out.extend(("required", (*path, key), None) for key in s.get("required", []) if get(body, (*path, key)))
    return out


def _renamed(item: Any, k: int) -> Any:
    if isinstance(item, dict) and "name" in item:
        return {**item, "name": f"{item['name']}{k}"}
    return copy.deepcopy(item)


@st.composite
def cases(draw: st.DrawFn, namespace: str) -> Case:
    """One ModelDeployment that breaks one constraint of the CRD's schema, and the field it names."""
    body = base(f"bad-{draw(st.integers(0, 10**9))}", namespace)
    rng = draw(st.randoms(use_true_random=False))  # spreads the sites; sampled_from favours the first
    what, path, values = rng.choice(rng.choice([found for s in sites(spec_schema()) if (found := breaks(s, body))]))
    if values is None:
        parent = get(body, path[:-1])
        del parent[path[-1]]
        return Case(body, field(path), what)
    value = draw(values)
    if what == "unknown field":
        key = value
        current = get(body, path)
        put(body, path, {**(current if isinstance(current, dict) else {}), key: "x"})
        return Case(body, field((*path, key)), what)
    put(body, path, value)
    return Case(body, field(path), what)
