"""What a test cluster can leave behind on this host, looked at independently of the harness's own
bookkeeping: /proc, the mount table, the links, network namespaces and iptables. Mounts and processes are
this cluster's: under its state directory and its socket directory. Another clone's cluster on the same host
(a killed session's, say) has a socket directory of its own and is not ours to judge."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from mlmodel_testing.cluster import STATE

TEARDOWN_MARK = "tears_down_cluster"  # the pytest marker of the tests that take the cluster down: they run last
# Its own list, not the harness's (mlcluster.cleanup): a program the harness forgets is what this looks for.
CLUSTER_PROGRAMS = {
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "containerd",
    "containerd-shim-runc-v2",
    "coredns",
}


def _cmdlines() -> list[tuple[int, str, str]]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                raw = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if raw:
                argv = raw.rstrip(b"\0").split(b"\0")
                out.append(
                    (int(d.name), Path(argv[0].decode(errors="replace")).name, b" ".join(argv).decode(errors="replace"))
                )
    return out


def sh(cmd: list[str]) -> str:
    """The standard output of ``cmd``, whatever its exit status."""
    return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout


def host_leftovers() -> dict[str, list[str]]:
    """What this cluster left on the host, by kind: processes, mounts, interfaces, iptables chains, cgroups."""
    state = str(STATE.resolve())
    # The harness keys its socket directory off the state directory (Unix sockets' path limit).
    sockdir = "/run/mlmodel-" + hashlib.sha256(state.encode()).hexdigest()[:10]
    ours = (state, sockdir)
    procs = [
        f"{pid} {cmd[:160]}"
        for pid, name, cmd in _cmdlines()
        # containerd/shims: only ours (docker runs its own containerd under /var/run/docker).
        if name in CLUSTER_PROGRAMS and (not name.startswith("containerd") or any(o in cmd for o in ours))
    ]
    mounts = [
        line.split()[4]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4].startswith((*ours, "/run/netns/cni-"))
    ]
    links = [ln for ln in sh(["ip", "-o", "link"]).splitlines() if "mlbr0" in ln]
    netns = [n for n in sh(["ip", "netns", "list"]).split() if n.startswith("cni-")]
    chains = []
    for binary in ("iptables-save", "ip6tables-save"):
        chains += [
            f"{binary}: {ln}"
            for ln in sh([binary]).splitlines()
            if ln.startswith(":") and ln[1:].startswith(("KUBE-", "CNI-", "MLMODEL-"))
        ]
    cgroups = [str(p) for p in Path("/sys/fs/cgroup").glob("*/kubepods")]
    return {
        "processes": procs,
        "mounts": mounts,
        "interfaces": links + [f"netns {n}" for n in netns],
        "iptables": chains,
        "cgroups": cgroups,
    }
