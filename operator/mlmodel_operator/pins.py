"""A registry model's pin, pure: written into its variant (so that the pods, a rollout's revisions and a restarted
operator all run what was resolved, never the moving alias), into the status, and read back from it."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from mlmodel_operator import registry, spec


def pinned_item(item: Mapping[str, Any], pin: registry.Pin, credentials_secret: str | None) -> dict[str, Any]:
    """The variant ``item`` (a ``spec.variants`` entry) serving ``pin``: its file's URL and digest, and the rest
    under ``spec.PINNED``."""
    extra = {
        "source": item["modelUri"],
        "version": pin.version,
        "runId": pin.run_id,
        "inputSchema": pin.input_schema if _columns(pin.input_schema) else None,
        "skopsTrusted": list(pin.skops_trusted) or None,
        "credentialsSecret": credentials_secret,
    }
    pinned = {key: value for key, value in extra.items() if value is not None}
    return {**item, "modelUri": pin.uri, "modelSha256": pin.sha256, spec.PINNED: pinned}


def _columns(schema: str | None) -> bool:
    """A signature of named columns, the server's input contract; not a tensor's (from a numpy input example),
    which says nothing of the columns."""
    try:
        columns = json.loads(schema) if schema else None
    except ValueError:
        return False
    return isinstance(columns, list) and all(isinstance(c, dict) and c.get("name") for c in columns)


def pinned_body(body: Mapping[str, Any], pins: Mapping[str, registry.Pin], credentials: str | None) -> dict[str, Any]:
    """``body`` with every variant named in ``pins`` pinned."""
    variants = [
        pinned_item(item, pins[item["name"]], credentials) if item.get("name") in pins else item
        for item in body["spec"]["variants"]
    ]
    return {**body, "spec": {**body["spec"], "variants": variants}}


def entry(variant: str, written: str, pin: registry.Pin) -> dict[str, Any]:
    """``status.models[]``: what a variant's registry URI resolved to, enough to serve it again (``pin_of``)."""
    fields = {
        "variant": variant,
        "modelUri": written,
        "resolved": pin.describe(),
        "version": pin.version,
        "runId": pin.run_id,
        "source": pin.source,
        "artifactUri": pin.uri,
        "sha256": pin.sha256,
        "sklearnVersion": pin.sklearn_version,
        "skopsTrusted": list(pin.skops_trusted) or None,
        "inputSchema": pin.input_schema,
    }
    return {key: value for key, value in fields.items() if value is not None}


def pin_of(entry: Mapping[str, Any]) -> registry.Pin:
    """The pin a ``status.models[]`` entry records."""
    ref = registry.parse(str(entry["modelUri"]))
    assert ref is not None  # only registry URIs are recorded
    return registry.Pin(
        uri=str(entry["artifactUri"]),
        sha256=str(entry["sha256"]),
        version=entry.get("version"),
        run_id=entry.get("runId"),
        source=str(entry.get("source", "")),
        sklearn_version=entry.get("sklearnVersion"),
        skops_trusted=tuple(entry.get("skopsTrusted") or ()),
        input_schema=entry.get("inputSchema"),
        ref=ref,
    )


def recorded(status: Mapping[str, Any], variant: str, written: str) -> registry.Pin | None:
    """The pin the status records for ``variant`` while its modelUri was ``written``, if any."""
    for item in status.get("models") or []:
        if item.get("variant") == variant and item.get("modelUri") == written:
            return pin_of(item)
    return None


def summary(entries: Sequence[Mapping[str, Any]]) -> str:
    """The printer column: ``iris@champion → v7``, one per registry variant (named when there are several)."""
    if len(entries) == 1:
        return str(entries[0]["resolved"])
    return ", ".join(f"{e['variant']}: {e['resolved']}" for e in entries)
