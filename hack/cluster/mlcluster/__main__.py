"""CLI: python3 hack/cluster/cluster.py {up,down,images,status,leftovers,kubeconfig}."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from . import kind
from .common import KUBECONFIG, PROVIDER_FILE, STATE, ClusterError, log, ok
from .local import ALL_DAEMONS, MODE_FILE, Local

PROVIDERS = ("local", "kind", "existing", "auto")


def recorded_provider() -> str | None:
    try:
        return PROVIDER_FILE.read_text().strip() or None
    except OSError:
        return None


def choose_provider() -> str:
    wanted = os.environ.get("MLMODEL_CLUSTER", "auto")
    if wanted not in PROVIDERS:
        raise ClusterError(f"MLMODEL_CLUSTER={wanted!r}: expected one of {', '.join(PROVIDERS)}")
    if wanted != "auto":
        return wanted
    recorded = recorded_provider()
    if recorded in ("local", "kind") and KUBECONFIG.exists():
        return recorded  # reuse whatever is running
    usable, why = kind.available()
    log(f"MLMODEL_CLUSTER=auto: {'kind' if usable else 'local'} ({why})")
    return "kind" if usable else "local"


def cmd_up(args: argparse.Namespace) -> None:
    t = time.monotonic()
    provider = choose_provider()
    recorded = recorded_provider()
    if recorded and recorded != provider and KUBECONFIG.exists():
        raise ClusterError(f"a {recorded} cluster is up; run `make cluster-down` before switching to {provider}")
    STATE.mkdir(parents=True, exist_ok=True)
    PROVIDER_FILE.write_text(provider + "\n")
    if provider == "local":
        Local().up(control_plane_only=args.control_plane_only)
    elif provider == "kind":
        kind.up()
    else:
        kind.existing_up()
    log(
        f"cluster ({provider}{', control plane only' if args.control_plane_only else ''}) is up "
        f"in {time.monotonic() - t:.1f}s"
    )
    link_kubectl()
    print(f"export KUBECONFIG={KUBECONFIG}")


def link_kubectl() -> None:
    """.cluster/bin/kubectl -> the pinned kubectl (for the tests and for people)."""
    from .binaries import kubectl_path

    link = STATE / "bin" / "kubectl"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(kubectl_path())


def cmd_down(_: argparse.Namespace) -> None:
    t = time.monotonic()
    provider = recorded_provider() or "local"
    if provider == "kind":
        kind.down()
    if provider == "local" or any(d.pidfile.exists() for d in ALL_DAEMONS):
        Local().down()
    KUBECONFIG.unlink(missing_ok=True)
    PROVIDER_FILE.unlink(missing_ok=True)
    log(f"cluster down ({time.monotonic() - t:.1f}s)")


def cmd_images(_: argparse.Namespace) -> None:
    from .images import images_main

    images_main(recorded_provider() or "local")


def cmd_status(_: argparse.Namespace) -> None:
    provider = recorded_provider()
    info: dict[str, object] = {"provider": provider, "kubeconfig": str(KUBECONFIG)}
    if provider == "local":
        info["mode"] = MODE_FILE.read_text().strip() if MODE_FILE.exists() else None
        info["daemons"] = Local().status()
    if KUBECONFIG.exists():
        from .binaries import kubectl_path

        info["api_ready"] = ok(
            [kubectl_path(), "--kubeconfig", str(KUBECONFIG), "--request-timeout=5s", "get", "--raw", "/readyz"]
        )
    print(json.dumps(info, indent=2))


def cmd_leftovers(_: argparse.Namespace) -> None:
    from .cleanup import leftovers

    left = leftovers()
    print(json.dumps(left, indent=2))
    sys.exit(1 if any(left.values()) else 0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cluster", description="mlmodel test cluster")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="bring the cluster up (idempotent)")
    up.add_argument(
        "--control-plane-only",
        action="store_true",
        help="local provider: only etcd, apiserver, controller-manager, scheduler",
    )
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop everything and clean up").set_defaults(func=cmd_down)
    sub.add_parser("images", help="build the images and load them into the cluster").set_defaults(func=cmd_images)
    sub.add_parser("status", help="show what runs").set_defaults(func=cmd_status)
    sub.add_parser("leftovers", help="list what a local cluster left on the host (exit 1 if any)").set_defaults(
        func=cmd_leftovers
    )
    args = p.parse_args(argv)
    try:
        args.func(args)
    except ClusterError as e:
        print(f"\n[cluster] ERROR: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
