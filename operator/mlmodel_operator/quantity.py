"""Kubernetes Quantities (``100m``, ``1Gi``, ``2e9``) as numbers. Pure."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

# A non-negative Quantity: a decimal number, then a binary or decimal multiple or an exponent.
_QUANTITY = re.compile(r"\+?(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?P<suffix>[KMGTPE]i|[numkMGTPE]|[eE][-+]?[0-9]+)?")
_DECIMAL = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_MULTIPLES = {prefix: Decimal(10) ** power for prefix, power in _DECIMAL.items()} | {
    f"{prefix}i": Decimal(2) ** (10 * power) for power, prefix in enumerate("KMGTPE", start=1)
}


def parse(value: Any) -> Decimal | None:
    """The value of a Quantity (a string or a plain number), or ``None`` if ``value`` is not one."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    found = _QUANTITY.fullmatch(str(value))
    if found is None:
        return None
    number, suffix = found["number"], found["suffix"] or ""
    return Decimal(number) * _MULTIPLES[suffix] if suffix in _MULTIPLES else Decimal(number + suffix)


def over_limit(resources: Any) -> str | None:
    """The first resource a container's ``resources`` request more of than their limit allows, if any (what is no
    quantity is not compared)."""
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    for name, requested in requests.items():
        wanted, most = parse(requested), parse(limits.get(name))
        if wanted is not None and most is not None and wanted > most:
            return str(name)
    return None
