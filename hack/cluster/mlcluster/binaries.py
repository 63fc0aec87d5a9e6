"""Host packages (Debian) and the pinned Go binaries (Kubernetes, etcd, CoreDNS).

Kubernetes binaries are looked up in this order:
  1. ``$MLMODEL_K8S_BIN_DIR`` (must contain all of them),
  2. the cache ``$MLMODEL_CACHE_DIR/k8s/<version>/bin`` (default ``~/.cache/mlmodel``),
  3. the official release download (5 s timeout, checksum-verified; skipped when
     ``MLMODEL_K8S_DOWNLOAD=0``),
  4. ``go build`` from the k8s.io/kubernetes module through the Go module proxy
     (``hack/cluster/build-go-bins.sh``), into the cache.
etcd and CoreDNS come from the cache or are built the same way, and so are the chart's tools
(helm, promtool, prometheus, kubeconform: ``ensure_go_tool``, pinned in ``hack/tools.py``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path

from . import versions
from .common import CACHE, HACK, LOGS, ClusterError, log, ok, run, step, tail, which

# Debian packages the local provider needs, keyed by a file that shows they are installed.
DEBIAN_PACKAGES = {
    "/usr/bin/containerd": "containerd",
    "/usr/sbin/runc": "runc",
    "/usr/lib/cni/bridge": "containernetworking-plugins",
    "/usr/sbin/iptables": "iptables",
    "/usr/sbin/conntrack": "conntrack",
    "/usr/sbin/ipset": "ipset",
    "/usr/bin/openssl": "openssl",
    "/usr/sbin/debootstrap": "debootstrap",
    "/usr/sbin/dockerd": "docker.io",
    "/usr/bin/gcc": "gcc",
    "/usr/lib/x86_64-linux-gnu/libc.a": "libc6-dev",
    "/usr/bin/socat": "socat",
    "/usr/sbin/ip": "iproute2",
    "/usr/bin/mount": "mount",
    "/usr/sbin/ethtool": "ethtool",
}
CNI_BIN_DIR = Path("/usr/lib/cni")


def ensure_debian_packages(paths: list[str] | None = None) -> None:
    """apt-get install whatever is missing (idempotent; apt-get update only when needed)."""
    wanted = DEBIAN_PACKAGES if paths is None else {p: DEBIAN_PACKAGES[p] for p in paths}
    missing = sorted({pkg for path, pkg in wanted.items() if not Path(path).exists()})
    if not missing:
        return
    if os.geteuid() != 0:
        raise ClusterError(f"need root to install Debian packages: {' '.join(missing)}")
    with step(f"apt-get install {' '.join(missing)}"):
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        logfile = LOGS / "apt.log"
        LOGS.mkdir(parents=True, exist_ok=True)
        with logfile.open("ab") as out:
            cmd = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
            full_env = {**os.environ, **env}
            if subprocess.run(cmd, stdout=out, stderr=out, env=full_env, check=False).returncode:
                subprocess.run(["apt-get", "update"], stdout=out, stderr=out, check=False)
                if subprocess.run(cmd, stdout=out, stderr=out, env=full_env, check=False).returncode:
                    raise ClusterError(f"apt-get install failed:\n{tail(logfile)}\n--- full log: {logfile}")


def _complete(d: Path, names: tuple[str, ...]) -> bool:
    return all(os.access(d / n, os.X_OK) for n in names)


def _download_release(version: str, dest: Path) -> bool:
    """Try the official release binaries; False (quickly) when unreachable."""
    if os.environ.get("MLMODEL_K8S_DOWNLOAD", "1") == "0":
        return False
    base = f"https://dl.k8s.io/release/{version}/bin/linux/amd64"
    tmp = dest.with_name(dest.name + ".dl")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for name in versions.K8S_BINARIES:
            with urllib.request.urlopen(f"{base}/{name}.sha256", timeout=5) as r:
                want = r.read().decode().split()[0]
            h = hashlib.sha256()
            with (
                urllib.request.urlopen(f"{base}/{name}", timeout=30) as r,
                (tmp / name).open("wb") as f,
            ):
                while chunk := r.read(1 << 20):
                    h.update(chunk)
                    f.write(chunk)
            if h.hexdigest() != want:
                raise ClusterError(f"checksum mismatch for {name}")
            (tmp / name).chmod(0o755)
    except Exception as e:  # noqa: BLE001 - any failure means "use the next source"
        log(f"release download of Kubernetes {version} not possible ({type(e).__name__}: {e}); building from source")
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return True


def _go_build(kind: str, version: str, dest: Path) -> subprocess.Popen[bytes]:
    if which("go") is None:
        raise ClusterError(
            "`go` is not on PATH; it is needed to build the Kubernetes/etcd/CoreDNS binaries "
            "(Go >= 1.24), or set MLMODEL_K8S_BIN_DIR to a directory with prebuilt ones"
        )
    LOGS.mkdir(parents=True, exist_ok=True)
    logfile = (LOGS / f"build-{kind}.log").open("wb")
    return subprocess.Popen(
        ["bash", str(HACK / "cluster" / "build-go-bins.sh"), kind, version, str(dest)],
        stdout=logfile,
        stderr=subprocess.STDOUT,
    )


def k8s_bin_dir_cached() -> Path:
    return CACHE / "k8s" / versions.KUBERNETES / "bin"


def etcd_bin_dir() -> Path:
    return CACHE / "etcd" / versions.ETCD / "bin"


def coredns_bin_dir() -> Path:
    return CACHE / "coredns" / versions.COREDNS / f"plugins-{versions.COREDNS_PLUGINS}" / "bin"


def kube_router_bin_dir() -> Path:
    return CACHE / "kube-router" / versions.KUBE_ROUTER / "bin"


def ensure_go_tool(kind: str, version: str, names: tuple[str, ...]) -> Path:
    """The cache directory holding ``names`` of tool ``kind``; built first when missing."""
    ensure_go_tools([(kind, version, names)])
    return CACHE / kind / version / "bin"


def ensure_go_tools(tools: Iterable[tuple[str, str, tuple[str, ...]]]) -> None:
    """Build the missing ones of ``tools`` (kind, version, the binaries it makes) side by side: a cold cache's
    module downloads then overlap the other builds' compiles."""
    builds: dict[str, subprocess.Popen[bytes]] = {}
    for kind, version, names in tools:
        dest = CACHE / kind / version / "bin"
        if kind not in builds and not _complete(dest, names):
            log(f"building {kind} {version} from its Go module; log: {LOGS / f'build-{kind}.log'}")
            builds[kind] = _go_build(kind, version, dest)
    _wait(builds)


def _wait(builds: Mapping[str, subprocess.Popen[bytes]]) -> None:
    if builds:
        with step(f"go build {', '.join(builds)}"):
            failed = [k for k, p in builds.items() if p.wait() != 0]
            if failed:
                details = "\n".join(
                    f"--- {LOGS / f'build-{k}.log'} (last lines) ---\n{tail(LOGS / f'build-{k}.log')}" for k in failed
                )
                raise ClusterError(f"building {', '.join(failed)} failed\n{details}")


def ensure_binaries(need_coredns: bool = True) -> Path:
    """Make sure the pinned binaries exist; returns the Kubernetes bin dir.

    Missing builds run in parallel (the Kubernetes one is the long pole: ~25 min cold on 2 cores).
    """
    env_dir = os.environ.get("MLMODEL_K8S_BIN_DIR")
    k8s_dir = k8s_bin_dir_cached()
    if env_dir:
        k8s_dir = Path(env_dir)
        if not _complete(k8s_dir, versions.K8S_BINARIES):
            raise ClusterError(f"MLMODEL_K8S_BIN_DIR={env_dir} lacks one of {versions.K8S_BINARIES}")
    builds: dict[str, subprocess.Popen[bytes]] = {}
    if not _complete(k8s_dir, versions.K8S_BINARIES):
        with step(f"Kubernetes {versions.KUBERNETES} binaries: trying the release download"):
            downloaded = _download_release(versions.KUBERNETES, k8s_dir)
        if not downloaded:
            log(
                f"building Kubernetes {versions.KUBERNETES} from the Go module (cold: ~25 min on 2 cores); "
                f"log: {LOGS / 'build-k8s.log'}"
            )
            builds["k8s"] = _go_build("k8s", versions.KUBERNETES, k8s_dir)
    if not _complete(etcd_bin_dir(), ("etcd",)):
        log(f"building etcd {versions.ETCD}; log: {LOGS / 'build-etcd.log'}")
        builds["etcd"] = _go_build("etcd", versions.ETCD, etcd_bin_dir())
    if need_coredns and not _complete(coredns_bin_dir(), ("coredns",)):
        log(f"building CoreDNS {versions.COREDNS}; log: {LOGS / 'build-coredns.log'}")
        builds["coredns"] = _go_build("coredns", versions.COREDNS, coredns_bin_dir())
    if need_coredns and not _complete(kube_router_bin_dir(), ("kube-router",)):
        log(f"building kube-router {versions.KUBE_ROUTER}; log: {LOGS / 'build-kube-router.log'}")
        builds["kube-router"] = _go_build("kube-router", versions.KUBE_ROUTER, kube_router_bin_dir())
    _wait(builds)
    if not ok([k8s_dir / "kubectl", "version", "--client"]):
        raise ClusterError(f"{k8s_dir / 'kubectl'} does not run")
    return k8s_dir


def kubectl_path() -> Path:
    env_dir = os.environ.get("MLMODEL_K8S_BIN_DIR")
    p = (Path(env_dir) if env_dir else k8s_bin_dir_cached()) / "kubectl"
    if p.exists():
        return p
    found = which("kubectl")
    if found:
        return Path(found)
    raise ClusterError("no kubectl: run `make cluster-up` first (it builds the pinned one)")


def kubectl_version_line() -> str:
    return run([kubectl_path(), "version", "--client"], capture=True).stdout.decode().strip()
