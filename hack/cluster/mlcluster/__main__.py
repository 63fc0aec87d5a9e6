"""CLI: python3 hack/cluster/cluster.py {up,down,images,kind-node-image,status,leftovers}."""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import time
from pathlib import Path

from . import kind, provider
from .common import KUBECONFIG, PROVIDER_FILE, STATE, ClusterError, log, ok
from .local import MODE_FILE, Local
from .localnode import ALL_DAEMONS

PROVIDERS = (*provider.NAMES, "auto")


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
    # The local provider where it can run (root on Linux): the e2e suite takes 12.5 min on it here and 15.5
    # on kind (README, "kind here"). Else kind, when Docker and a node image are there.
    if os.geteuid() == 0 and sys.platform == "linux":
        log("MLMODEL_CLUSTER=auto: local (root on Linux; MLMODEL_CLUSTER=kind for kind)")
        return "local"
    usable, why = kind.available()
    log(f"MLMODEL_CLUSTER=auto: {'kind' if usable else 'local'} ({why})")
    return "kind" if usable else "local"


def cmd_up(args: argparse.Namespace) -> None:
    t = time.monotonic()
    chosen = choose_provider()
    recorded = recorded_provider()
    if recorded and recorded != chosen and KUBECONFIG.exists():
        raise ClusterError(f"a {recorded} cluster is up; run `make cluster-down` before switching to {chosen}")
    STATE.mkdir(parents=True, exist_ok=True)
    PROVIDER_FILE.write_text(chosen + "\n")
    provider.get(chosen).up(control_plane_only=args.control_plane_only)
    log(
        f"cluster ({chosen}{', control plane only' if args.control_plane_only else ''}) is up "
        f"in {time.monotonic() - t:.1f}s"
    )
    link_tools(chosen)
    print(f"export KUBECONFIG={KUBECONFIG}")


def link_tools(chosen: str) -> None:
    """.cluster/bin/kubectl -> the pinned kubectl (for the tests and for people), and on kind the kind CLI."""
    from .binaries import kubectl_path

    tools = {"kubectl": kubectl_path(), **({"kind": Path(kind.kind_bin())} if chosen == "kind" else {})}
    for name, target in tools.items():
        link = STATE / "bin" / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(target)


def cmd_down(_: argparse.Namespace) -> None:
    t = time.monotonic()
    recorded = recorded_provider() or "local"
    provider.get(recorded).down()
    if recorded != "local" and any(d.pidfile.exists() for d in ALL_DAEMONS):
        Local().down()  # a local cluster left from before the switch
    KUBECONFIG.unlink(missing_ok=True)
    PROVIDER_FILE.unlink(missing_ok=True)
    log(f"cluster down ({time.monotonic() - t:.1f}s)")


def cmd_images(args: argparse.Namespace) -> None:
    """`make images`: build the images and make them available to the cluster's runtime. One at a time: a second
    waits for the first (`make test` loads the examples' in the background while the e2e suite starts), then
    finds its work done."""
    from .images import build_app_images

    t = time.monotonic()
    STATE.mkdir(parents=True, exist_ok=True)
    with (STATE / "images.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        built = build_app_images(examples=not args.no_examples)
        target = provider.get(recorded_provider() or "local")
        if target.can_load():
            for image in built:
                target.load_image(image)
        else:
            log(f"provider {target.name}: no runtime to load into, images built only (`make cluster-up` loads them)")
    log(f"images ready: {', '.join(built)} ({time.monotonic() - t:.1f}s)")


def cmd_kind_node_image(_: argparse.Namespace) -> None:
    from .kindimage import build_node_image

    print(build_node_image())


def cmd_status(_: argparse.Namespace) -> None:
    recorded = recorded_provider()
    info: dict[str, object] = {"provider": recorded, "kubeconfig": str(KUBECONFIG)}
    if recorded == "local":
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
    images = sub.add_parser("images", help="build the images and load them into the cluster")
    images.add_argument(
        "--no-examples", action="store_true", help="only the server, operator and router: not the MLflow server's"
    )
    images.set_defaults(func=cmd_images)
    sub.add_parser("kind-node-image", help="build kind's node image here, from upstream parts").set_defaults(
        func=cmd_kind_node_image
    )
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
