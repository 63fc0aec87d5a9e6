"""Does a live object still hold what the operator applied? Pure.

The desired object must be a subset of the live one: the API server adds defaults,
but every value the operator sets must be there, unchanged. Quantities are compared
by value, since the server rewrites them (``1000m`` becomes ``1``), and a zero value
may be missing, since the server omits empty ``omitempty`` fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

_SUFFIXES = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def drifted(desired: Any, live: Any, path: str = "") -> str | None:
    """The first path where ``live`` does not hold ``desired``, or ``None``."""
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return path or "."
        for key, value in desired.items():
            where = f"{path}.{key}"
            if key not in live:
                if value in (0, False, "", None, [], {}):
                    continue  # the API server omits zero values of omitempty fields
                return where
            found = drifted(value, live[key], where)
            if found:
                return found
        return None
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return path
        for i, (want, have) in enumerate(zip(desired, live, strict=True)):
            found = drifted(want, have, f"{path}[{i}]")
            if found:
                return found
        return None
    if desired == live or _same_quantity(desired, live):
        return None
    return path


def manages(live: Mapping[str, Any], manager: str, *path: str) -> bool:
    """``manager`` applied the field at ``path`` of ``live`` (per its managedFields) and still owns it."""
    for entry in live.get("metadata", {}).get("managedFields") or []:
        if entry.get("manager") != manager or entry.get("operation") != "Apply":
            continue
        fields: Mapping[str, Any] | None = entry.get("fieldsV1") or {}
        for key in path:
            fields = (fields or {}).get(f"f:{key}")
        if fields is not None:
            return True
    return False


def _same_quantity(a: Any, b: Any) -> bool:
    qa, qb = _quantity(a), _quantity(b)
    return qa is not None and qa == qb


def _quantity(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text = str(value)
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if suffix and text.endswith(suffix):
            number, scale = text[: -len(suffix)], _SUFFIXES[suffix]
            break
    else:
        number, scale = text, Decimal(1)
    try:
        return Decimal(number) * scale
    except InvalidOperation:
        return None
