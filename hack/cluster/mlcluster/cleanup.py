"""Tear the local cluster down and check that nothing is left behind.

What the local cluster leaves on the host while it runs, and how ``down`` removes it:

* processes: our daemons (pid files), containerd shims started with our containerd's socket and
  the pod processes under them (found through the ``kubepods`` cgroups) -> killed;
* mounts: everything under ``.cluster/`` and ``/run/mlmodel-*`` (kubelet volumes, container
  rootfs overlays, sandbox shm) and the pod network namespaces ``/run/netns/cni-*``
  -> unmounted (deepest first) and the namespaces deleted;
* network: bridge ``mlbr0`` and the veths on it, the Service route -> deleted;
* iptables/ip6tables: chains ``KUBE-*`` (kube-proxy, kube-router), ``CNI-*`` (portmap/bridge) and
  ``MLMODEL-*`` (ours), and the jumps to them from the built-in chains -> deleted; then kube-router's
  ipsets (``KUBE-*`` and ``inet6:KUBE-*``) -> destroyed;
* cgroups ``kubepods`` in every v1 hierarchy -> removed;
* files: ``.cluster/`` (except ``logs/``), the socket dir, ``/var/log/containers`` links into it.

Docker (the image builder) is not part of the cluster and keeps running.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import time
from pathlib import Path
from typing import Protocol

from .common import (
    LOGS,
    SOCKDIR,
    STATE,
    kill_and_wait,
    log,
    ok,
    output,
    pid_alive,
    processes,
    run,
    step,
)
from .localnode import ALL_DAEMONS, BRIDGE, KUBELET, NODE


class Node(Protocol):
    """What the teardown asks of the local provider: its API server and its containerd."""

    def kubectl(self, *args: str, input: bytes | None = None, check: bool = True) -> str: ...
    def ctr(self, *args: str | Path, input: bytes | None = None, check: bool = True) -> str: ...
    def ctr_ok(self) -> bool: ...


CHAIN_PREFIXES = ("KUBE-", "CNI-", "MLMODEL-")
DAEMON_NAMES = {
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kube-router",
}
CGROUP_ROOT = Path("/sys/fs/cgroup")


# --- what is there ---------------------------------------------------------------------------


def _ours(argv: list[str]) -> bool:
    text = " ".join(argv)
    return f"{STATE}/" in text or str(SOCKDIR) in text  # not another cluster's `.cluster-<name>/`


def leftover_processes() -> list[str]:
    """Processes of the cluster: daemons (by our paths), shims of our containerd, pod processes."""
    found = []
    me = os.getpid()
    for pid, argv in processes():
        if pid == me:
            continue
        name = Path(argv[0]).name
        if _ours(argv) and (name in DAEMON_NAMES or name.startswith("containerd") or name in {"coredns"}):
            found.append(f"{pid} {' '.join(argv)[:200]}")
    for pid in pod_pids():
        if pid_alive(pid):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            found.append(f"{pid} (pod) {cmd[:200]}")
    return sorted(set(found))


def kubepods_cgroups() -> list[Path]:
    out = []
    if CGROUP_ROOT.is_dir():
        for hier in CGROUP_ROOT.iterdir():
            p = hier / "kubepods"
            if p.is_dir():
                out.append(p)
    # cgroup v2 unified layout
    if (CGROUP_ROOT / "kubepods").is_dir() and (CGROUP_ROOT / "cgroup.controllers").exists():
        out.append(CGROUP_ROOT / "kubepods")
    return out


def pod_pids() -> set[int]:
    pids: set[int] = set()
    for cg in kubepods_cgroups():
        for procs in cg.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(x) for x in procs.read_text().split())
    return pids


def _mountpoints() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mp = line.split()[4].encode().decode("unicode_escape")
        points.append(mp)
    return points


def leftover_mounts() -> list[str]:
    prefixes = (
        str(STATE) + "/",
        str(SOCKDIR) + "/",
        "/run/netns/cni-",
        "/var/run/netns/cni-",
    )
    return [m for m in _mountpoints() if m.startswith(prefixes) or m in (str(STATE), str(SOCKDIR))]


def leftover_interfaces() -> list[str]:
    out = []
    if ok(["ip", "link", "show", BRIDGE]):
        out.append(BRIDGE)
    # veths whose peer is in a pod netns would vanish with the netns; any still enslaved to
    # the bridge show up above through the bridge itself.
    out += [f"netns {n}" for n in netns_names()]
    return out


def netns_names() -> list[str]:
    d = Path("/run/netns")
    return sorted(p.name for p in d.iterdir() if p.name.startswith("cni-")) if d.is_dir() else []


def _tables(binary: str) -> list[str]:
    names = Path("/proc/net/ip6_tables_names" if binary.startswith("ip6") else "/proc/net/ip_tables_names")
    base = ["filter", "nat", "mangle", "raw"]
    with contextlib.suppress(OSError):
        base += [t for t in names.read_text().split() if t not in base]
    return base


def leftover_chains() -> list[str]:
    found = []
    for binary in ("iptables", "ip6tables"):
        if not shutil.which(binary):
            continue
        for table in _tables(binary):
            p = run([binary, "-w", "-t", table, "-S"], check=False, quiet=True)
            for line in p.stdout.decode().splitlines():
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "-N" and parts[1].startswith(CHAIN_PREFIXES):
                    found.append(f"{binary} -t {table} {parts[1]}")
    return found


def leftovers() -> dict[str, list[str]]:
    return {
        "processes": leftover_processes(),
        "mounts": leftover_mounts(),
        "interfaces": leftover_interfaces(),
        "iptables": leftover_chains(),
        "ipsets": leftover_ipsets(),
        "cgroups": [str(p) for p in kubepods_cgroups()],
    }


# --- removing it -----------------------------------------------------------------------------


def _drain_pods(local: Node) -> None:
    """Let the kubelet stop every pod (so CNI DEL releases IPs and network state).

    The node is cordoned first so that controllers' replacement pods stay Pending. Bounded: after
    30 s the brute-force steps below take over.
    """
    if not (KUBELET.running() and local.ctr_ok()):
        return
    if local.kubectl("cordon", NODE, check=False) == "":
        return  # API server not answering
    local.kubectl(
        "delete", "pods", "--all", "--all-namespaces", "--grace-period=0", "--force", "--wait=false", check=False
    )

    def no_running_tasks() -> bool:
        return "RUNNING" not in local.ctr("tasks", "ls", check=False)

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not no_running_tasks():
        time.sleep(0.5)


def _stop_containers(local: Node) -> None:
    """Kill all tasks and delete all containers through containerd, so shims exit cleanly."""
    if not local.ctr_ok():
        return
    cni_results = Path("/var/lib/cni/results")
    for cid in local.ctr("containers", "ls", "-q", check=False).split():
        for f in cni_results.glob(f"*-{cid}-*") if cni_results.is_dir() else ():
            f.unlink(missing_ok=True)
    ids = local.ctr("tasks", "ls", "-q", check=False).split()
    for cid in ids:
        local.ctr("tasks", "kill", "--all", "--signal", "SIGKILL", cid, check=False)
    deadline = time.monotonic() + 15
    for cid in ids:
        while time.monotonic() < deadline:
            if local.ctr("tasks", "delete", cid, check=False) == "" and cid not in local.ctr(
                "tasks", "ls", "-q", check=False
            ):
                break
            time.sleep(0.2)
    for cid in local.ctr("containers", "ls", "-q", check=False).split():
        local.ctr("containers", "delete", cid, check=False)


def _kill_remaining() -> None:
    for _ in range(3):
        for pid in pod_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid, argv in processes():
            name = Path(argv[0]).name
            if pid != os.getpid() and _ours(argv) and (name in DAEMON_NAMES or name.startswith("containerd")):
                kill_and_wait(pid, 10)
        time.sleep(0.3)


def _unmount_all() -> None:
    for _ in range(3):
        mounts = sorted(set(leftover_mounts()), key=lambda m: m.count("/"), reverse=True)
        if not mounts:
            return
        for m in mounts:
            if run(["umount", m], check=False, quiet=True).returncode != 0:
                run(["umount", "-l", m], check=False, quiet=True)


def _delete_chains() -> None:
    for binary in ("iptables", "ip6tables"):
        if not shutil.which(binary):
            continue
        for table in _tables(binary):
            rules = run([binary, "-w", "-t", table, "-S"], check=False, quiet=True).stdout.decode().splitlines()
            ours = [r.split()[1] for r in rules if r.startswith("-N ") and r.split()[1].startswith(CHAIN_PREFIXES)]
            # Jumps from the built-in (and any other) chains into ours.
            for r in rules:
                parts = shlex.split(r)
                if (
                    parts[:1] == ["-A"]
                    and not parts[1].startswith(CHAIN_PREFIXES)
                    and any(p in ours for p in parts[2:])
                ):
                    run(
                        [binary, "-w", "-t", table, "-D", *parts[1:]],
                        check=False,
                        quiet=True,
                    )
            for chain in ours:
                run([binary, "-w", "-t", table, "-F", chain], check=False, quiet=True)
            for chain in ours:
                run([binary, "-w", "-t", table, "-X", chain], check=False, quiet=True)


def leftover_ipsets() -> list[str]:
    if not shutil.which("ipset"):
        return []
    names = run(["ipset", "list", "-n"], check=False, quiet=True).stdout.decode().split()
    return [n for n in names if n.removeprefix("inet6:").startswith("KUBE-")]


def _delete_ipsets() -> None:
    for name in leftover_ipsets():  # after the chains: a set still in a rule cannot go
        run(["ipset", "destroy", name], check=False, quiet=True)


def _delete_network() -> None:
    for ns in netns_names():
        run(["ip", "netns", "delete", ns], check=False, quiet=True)
        with contextlib.suppress(OSError):
            (Path("/run/netns") / ns).unlink()
    if ok(["ip", "link", "show", BRIDGE]):
        veths = output(["ip", "-o", "link", "show", "master", BRIDGE], check=False)
        for line in veths.splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            run(["ip", "link", "delete", name], check=False, quiet=True)
        run(["ip", "link", "delete", BRIDGE], check=False, quiet=True)


def _remove_cgroups() -> None:
    for cg in kubepods_cgroups():
        for d in sorted(
            (p for p in cg.rglob("*") if p.is_dir()),
            key=lambda p: len(p.parts),
            reverse=True,
        ):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            cg.rmdir()


def _remove_files() -> None:
    logs_dir = Path("/var/log/containers")
    if logs_dir.is_dir():
        for link in logs_dir.iterdir():
            with contextlib.suppress(OSError):
                if link.is_symlink() and str(link.readlink()).startswith(str(STATE)):
                    link.unlink()
    # CNI result caches of our network ("mlmodel"), normally removed by CNI DEL.
    for f in Path("/var/lib/cni/results").glob("mlmodel-*"):
        f.unlink(missing_ok=True)
    # The kubelet's device-plugin socket lives at a fixed path, whatever --root-dir says.
    sock = Path("/var/lib/kubelet/device-plugins/kubelet.sock")
    if sock.is_socket():
        sock.unlink()
    # Directories the kubelet/containerd create at fixed paths, removed when empty (i.e. ours).
    for d in (
        "/run/containerd/runc/k8s.io",
        "/var/lib/kubelet/device-plugins",
        "/var/lib/kubelet",
        "/var/log/containers",
    ):
        with contextlib.suppress(OSError):
            Path(d).rmdir()
    shutil.rmtree(SOCKDIR, ignore_errors=True)
    if STATE.is_dir():
        for child in STATE.iterdir():
            if child == LOGS:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


def teardown_local(local: Node) -> None:
    with step("stop pods"):
        _drain_pods(local)
    with step("stop kubelet"):
        KUBELET.stop()
    with step("stop pods and containers"):
        _stop_containers(local)
    with step("stop control plane, kube-proxy and containerd"):
        for d in ALL_DAEMONS:
            d.stop()
        _kill_remaining()
    with step("unmount, delete network namespaces, bridge, iptables chains and cgroups"):
        _unmount_all()
        _delete_network()
        _delete_chains()
        _delete_ipsets()
        _remove_cgroups()
    with step("remove cluster state (logs are kept in .cluster/logs)"):
        _remove_files()
    left = {k: v for k, v in leftovers().items() if v}
    if left:
        log(f"WARNING: left behind after cluster-down: {left}")
    else:
        log("nothing left behind")
