"""``VARIANT=PERCENT`` arguments applied to a split, for ``kubectl mlmodel set-weight`` and ``mlmodel compose
set-weight``. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class WeightError(ValueError):
    """The arguments do not make a split: the message says why."""


def moved(current: Mapping[str, int], pairs: Sequence[str]) -> dict[str, int]:
    """``current`` (variant to percent, in spec order) with ``pairs`` applied; what they leave must sum to 100."""
    weights = dict(current)
    for pair in pairs:
        variant, _, percent = pair.partition("=")
        if variant not in weights:
            raise WeightError(f"no variant {variant!r} (its variants: {', '.join(current)})")
        if not percent.isdigit() or int(percent) > 100:
            raise WeightError(f"{pair!r}: a weight is VARIANT=PERCENT, a whole number from 0 to 100")
        weights[variant] = int(percent)
    if sum(weights.values()) != 100:
        shown = ", ".join(f"{v}={w}" for v, w in weights.items())
        raise WeightError(f"weights must sum to 100, these sum to {sum(weights.values())} ({shown})")
    return weights
