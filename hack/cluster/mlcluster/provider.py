"""The test cluster's providers behind one small interface: ``local``, ``kind`` and ``existing``.

Beneath them: ``docker`` and ``images`` (what is built here), ``binaries`` (what is built from Go
modules), ``common``; none of those knows a provider, and no provider knows another.
"""

from __future__ import annotations

from typing import Protocol

from .common import ClusterError
from .existing import Existing
from .kind import Kind
from .local import Local

NAMES = ("local", "kind", "existing")


class Provider(Protocol):
    """What ``cluster.py`` asks of a provider."""

    name: str

    def up(self, control_plane_only: bool = False) -> None:
        """Bring the cluster up (idempotent) and write the kubeconfig."""

    def down(self) -> None:
        """Stop the cluster and remove what it left on the host."""

    def can_load(self) -> bool:
        """Whether the cluster's runtime is there to load images into."""

    def load_image(self, image: str) -> None:
        """Make a locally built image available to the cluster's runtime."""


def get(name: str) -> Provider:
    providers: dict[str, Provider] = {"local": Local(), "kind": Kind(), "existing": Existing()}
    if name not in providers:
        raise ClusterError(f"no provider {name!r}: expected one of {', '.join(NAMES)}")
    return providers[name]
