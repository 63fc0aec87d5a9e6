#!/usr/bin/env python3
"""The ModelDeployment API reference, ``docs/reference/api.md``, rendered from the CRD's openAPIV3Schema.

Every field: its path, type, default, constraints (required, enum, bounds, lengths, pattern, list
keys), its description, and the CEL rules (``x-kubernetes-validations``) with their messages. One
section per object, in schema order; ``hack/tests/test_apiref.py`` fails while the page is stale.

    .venv/bin/python hack/apiref.py            # print the page
    .venv/bin/python hack/apiref.py --write    # write docs/reference/api.md
    .venv/bin/python hack/apiref.py --check    # exit 1 when docs/reference/api.md differs from a fresh render
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CRD = REPO / "crds" / "modeldeployments.mlmodel.io.yaml"
PAGE = REPO / "docs" / "reference" / "api.md"
COMMAND = ".venv/bin/python hack/apiref.py --write"

Schema = dict[str, Any]


@dataclass(frozen=True)
class Section:
    """One object of the schema: its path (``spec.variants[]``) and its schema."""

    path: str
    schema: Schema


def text(value: str) -> str:
    """Prose for a table cell: one line, Markdown's special characters escaped."""
    out = " ".join(value.split())
    for char in "\\`*_[]|":
        out = out.replace(char, "\\" + char)
    return out.replace("<", "&lt;").replace(">", "&gt;")


def code(value: Any) -> str:
    """A literal in a code span (Python-Markdown's tables take a pipe in a code span as text)."""
    literal = " ".join((value if isinstance(value, str) else json.dumps(value)).split())
    fence = "``" if "`" in literal else "`"
    return f"{fence}{literal}{fence}"


def type_name(schema: Schema) -> str:
    """``string``, ``integer (int32)``, ``[]object``, ``map[string]int-or-string``, ..."""
    if schema.get("x-kubernetes-int-or-string"):
        return "int-or-string"
    kind = schema.get("type", "any")
    if kind == "array":
        return "[]" + type_name(schema.get("items", {}))
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return "map[string]" + type_name(schema["additionalProperties"])
    return f"{kind} ({schema['format']})" if "format" in schema else str(kind)


def bounds(low: Any, high: Any, unit: str = "") -> str | None:
    """``1 to 10 items``, ``≥ 0``, ``≤ 63 characters``, or None."""
    suffix = f" {unit}" if unit else ""
    if low is not None and high is not None:
        return f"{low} to {high}{suffix}"
    if low is not None:
        return f"≥ {low}{suffix}"
    if high is not None:
        return f"≤ {high}{suffix}"
    return None


def constraints(schema: Schema) -> list[str]:
    """What the schema itself checks of a value (not its CEL rules)."""
    out: list[str] = []
    if "enum" in schema:
        out.append("one of " + ", ".join(code(str(v)) for v in schema["enum"]))
    for found in (
        bounds(schema.get("minimum"), schema.get("maximum")),
        bounds(schema.get("minLength"), schema.get("maxLength"), "characters"),
        bounds(schema.get("minItems"), schema.get("maxItems"), "items"),
        bounds(schema.get("minProperties"), schema.get("maxProperties"), "entries"),
    ):
        if found:
            out.append(found)
    if "pattern" in schema:
        out.append("pattern " + code(schema["pattern"]))
    if schema.get("x-kubernetes-list-type") == "map":
        out.append("unique by " + ", ".join(code(k) for k in schema.get("x-kubernetes-list-map-keys", [])))
    elif "x-kubernetes-list-type" in schema:
        out.append("list type " + code(schema["x-kubernetes-list-type"]))
    values = schema.get("additionalProperties")
    if isinstance(values, dict) and (inner := constraints(values)):
        out.append("each value: " + "; ".join(inner))
    return out


def item_schema(schema: Schema) -> Schema:
    """What an array holds, or the schema itself."""
    return schema.get("items", {}) if schema.get("type") == "array" else schema


def join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def child_path(path: str, name: str, field: Schema) -> str:
    """The path of a field's section: ``spec`` and ``variants`` -> ``spec.variants[]`` (an array's items)."""
    return join(path, name) + ("[]" if field.get("type") == "array" else "")


def sections(path: str, schema: Schema) -> Iterator[Section]:
    """Every object with properties, depth first in schema order."""
    if "properties" in schema:
        yield Section(path, schema)
    for name, child in schema.get("properties", {}).items():
        yield from sections(child_path(path, name, child), item_schema(child))


def anchor(path: str) -> str:
    """The heading id Python-Markdown's toc gives a section's heading (``spec.variants[]`` -> ``specvariants``)."""
    return "".join(c for c in path.lower() if c.isalnum() or c in "-_")


def field_row(section: Section, name: str, field: Schema) -> str:
    inner = item_schema(field)
    label = code(name)
    if "properties" in inner:
        label = f"[{label}](#{anchor(child_path(section.path, name, field))})"
    checks = constraints(field)
    if name in section.schema.get("required", []):
        checks.insert(0, "required")
    default = code(field["default"]) if "default" in field else ""
    description = text(str(field.get("description") or inner.get("description") or ""))
    return f"| {label} | {type_name(field)} | {default} | {'; '.join(checks)} | {description} |"


def rules(section: Section, kind: str) -> Iterator[str]:
    """The CEL rules of an object and of its scalar fields: the field each names, its message, the rule."""
    owners = [(section.path, section.schema)]
    for name, field in section.schema.get("properties", {}).items():
        if "properties" not in item_schema(field):
            owners.append((join(section.path, name), field))
    for owner, schema in owners:
        for rule in schema.get("x-kubernetes-validations", []):
            where = (owner + rule.get("fieldPath", "")).lstrip(".") or kind
            reason = f" ({rule['reason']})" if "reason" in rule else ""
            message = text(rule.get("message", "")) or "(no message)"
            yield f"- {code(where)}{reason}: {message} Rule: {code(rule['rule'])}"


def render_section(section: Section, title: str, kind: str) -> list[str]:
    lines = [f"## {title}", ""]
    if description := section.schema.get("description"):
        lines += [text(description), ""]
    lines += [
        "| field | type | default | constraints | description |",
        "| --- | --- | --- | --- | --- |",
        *(field_row(section, name, field) for name, field in section.schema["properties"].items()),
        "",
    ]
    if found := list(rules(section, kind)):
        lines += ["Rules (CEL, checked by the API server):", "", *found, ""]
    return lines


def render(crd: Schema) -> str:
    """The reference page of the CRD's storage version."""
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    names = crd["spec"]["names"]
    group_version = f"{crd['spec']['group']}/{version['name']}"
    kind = names["kind"]
    short = ", ".join(code(n) for n in names.get("shortNames", []))
    lines = [
        f"# {kind} API reference",
        "",
        f"<!-- Generated by hack/apiref.py from the CRD: do not edit. Regenerate: {COMMAND} -->",
        "",
        f"`{group_version}`, kind `{kind}`, {crd['spec']['scope'].lower()}"
        + (f", short name {short}." if short else "."),
        "",
        "Generated from the CustomResourceDefinition's openAPIV3Schema by `hack/apiref.py`: every field with"
        " its type, default and constraints, and the CEL rules, each with the message the API server answers"
        " when it fails.",
        "",
    ]
    columns = version.get("additionalPrinterColumns", [])
    if columns:
        lines += [
            f"`kubectl get {names['plural']}` columns:",
            "",
            "| column | from | description |",
            "| --- | --- | --- |",
            *(f"| {c['name']} | {code(c['jsonPath'])} | {text(c.get('description', ''))} |" for c in columns),
            "",
        ]
    for section in sections("", version["schema"]["openAPIV3Schema"]):
        lines += render_section(section, code(section.path) if section.path else kind, kind)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crd", type=Path, default=CRD)
    parser.add_argument("--page", type=Path, default=PAGE)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="write the page")
    mode.add_argument("--check", action="store_true", help="exit 1 when the page is stale")
    args = parser.parse_args(argv)
    page = render(yaml.safe_load(args.crd.read_text()))
    if args.write:
        args.page.parent.mkdir(parents=True, exist_ok=True)
        args.page.write_text(page)
    elif args.check:
        if not args.page.exists() or args.page.read_text() != page:
            print(f"{args.page} is stale: {COMMAND}", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(page)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
