"""kind's node image, built here from upstream parts (``make kind-node-image``).

Nothing can be pulled here, so ``kind build node-image`` cannot run as it is: it fetches etcd,
CoreDNS, pause, kindnetd and the storage images from their registries inside its build
container (``ctr content fetch``), whatever is present locally. This module does the same
steps as kind's build (``pkg/build/nodeimage/buildcontext.go``) with the images made here:

1. the base image: ``hack/images/kind-base/Dockerfile``, with kind's files from its module and
   crictl from its module;
2. the images the node runs, each tagged as kubeadm and kind's manifests name it: the control
   plane and etcd from the binaries the harness builds, kube-proxy and CoreDNS from them too
   (``hack/images/kind-node/``), and the harness's pause;
3. the node: the base with kubeadm, kubelet and kubectl, and every image imported into its
   containerd, committed as ``versions.KIND_LOCAL_NODE_IMAGE``.

kindnetd is the one part left out: its module (``github.com/aojea/kindnet``) is refused by the
module proxy here (403), and kind's older in-tree copy is a nested module the proxy does not
serve (404). The node image carries a static CNI config instead (ptp and host-local on the
node's pod CIDR, what kindnetd writes on a single node), and an empty default CNI manifest.

Nor is kind's default StorageClass (local-path-provisioner) built: no test here claims a volume, and its build
was 2 to 4 minutes of a cold CI run's last lane. kind applies an empty storage manifest instead; the official
node images that users run have it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from . import binaries, versions
from .common import CACHE, HACK, ClusterError, log, output, run, step
from .docker import docker, docker_build, docker_label, ensure_docker
from .images import ensure_base_image, ensure_pause_image, import_single_binary

KIND_BASE_IMAGE = f"mlmodel/kind-base:{versions.KIND}"
SOURCE_LABEL = "mlmodel.source"
# Not kind's default 10.244.0.0/16, which the local provider uses: the two may be up at once, and the host
# routes each one's pod subnet to its node. A single node gets the first /24.
POD_SUBNET = "10.245.0.0/16"
SERVICE_SUBNET = "10.97.0.0/16"
NODE_POD_SUBNET = "10.245.0.0/24"
# What the harness builds, tagged as such (kubeadm v1.34.4 lists etcd 3.6.5-0 and CoreDNS v1.12.1;
# kind's kubeadm config names these instead).
ETCD_TAG = f"{versions.ETCD.lstrip('v')}-0"
COREDNS_TAG = versions.COREDNS
STATIC_CNI = {
    "cniVersion": "0.3.1",
    "name": "kindnet",
    "plugins": [
        {
            "type": "ptp",
            "ipMasq": False,
            "ipam": {
                "type": "host-local",
                "dataDir": "/run/cni-ipam-state",
                "routes": [{"dst": "0.0.0.0/0"}],
                "ranges": [[{"subnet": NODE_POD_SUBNET}]],
            },
            "mtu": 1500,
        },
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ],
}
EMPTY_STORAGE_MANIFEST = """\
# No default StorageClass: local-path-provisioner is not built here (no test claims a volume).
apiVersion: v1
kind: ConfigMap
metadata:
  name: mlmodel-no-storage
  namespace: kube-system
data:
  provisioner: none
"""
EMPTY_CNI_MANIFEST = """\
# kindnetd cannot be built here (its Go module is refused by the module proxy); the node image
# has a static CNI config in /etc/cni/net.d instead. kind applies this file in place of kindnetd.
apiVersion: v1
kind: ConfigMap
metadata:
  name: mlmodel-static-cni
  namespace: kube-system
data:
  cni: /etc/cni/net.d/10-kindnet.conflist
"""


@functools.cache
def kind_module() -> Path:
    """The kind module's source, from the Go module cache (downloaded through the proxy)."""
    found = json.loads(output(["go", "mod", "download", "-json", f"sigs.k8s.io/kind@{versions.KIND}"], timeout=600))
    return Path(found["Dir"])


def _tool(name: str) -> Path:
    kind, version, names = TOOLS[name]
    return binaries.ensure_go_tool(kind, version, names) / name


TOOLS = {
    "crictl": ("crictl", versions.CRICTL, ("crictl",)),
    "kubeadm": ("kubeadm", versions.KUBERNETES, ("kubeadm",)),
}


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


def _labelled_build(tag: str, dockerfile: Path, key: str, context: dict[str, Path]) -> None:
    """``docker build`` of ``dockerfile`` FROM the base image, labelled with ``key``, unless ``tag`` already
    is; ``context``: the build context's files and directories, by name."""
    if docker_label(tag, SOURCE_LABEL) == key:
        return
    ensure_base_image()
    with tempfile.TemporaryDirectory(prefix="kind-build.", dir=CACHE) as tmp:
        root = Path(tmp)
        for name, source in context.items():
            if source.is_dir():
                shutil.copytree(source, root / name)
                for path in (root / name).rglob("*"):
                    path.chmod(0o755 if path.is_dir() else 0o644)
            else:
                shutil.copy2(source, root / name)
        (root / "Dockerfile").write_text(dockerfile.read_text() + f'LABEL {SOURCE_LABEL}="{key}"\n')
        docker_build(tag, "Dockerfile", root, {"BASE_IMAGE": versions.BASE_IMAGE})


def ensure_kind_base() -> None:
    dockerfile = HACK / "images" / "kind-base" / "Dockerfile"
    crictl = _tool("crictl")
    key = _digest(dockerfile.read_bytes(), crictl.read_bytes(), versions.KIND.encode(), versions.BASE_IMAGE.encode())
    files = kind_module() / "images" / "base" / "files"
    _labelled_build(KIND_BASE_IMAGE, dockerfile, key, {"files": files, "crictl": crictl})


def _control_plane_image(tag: str, binary: Path) -> None:
    key = hashlib.sha256(binary.read_bytes()).hexdigest()[:16]
    if docker_label(tag, SOURCE_LABEL) == key:
        return
    with step(f"build {tag} from {binary.name}"):
        import_single_binary(
            tag, binary, f"usr/local/bin/{binary.name}", ["ENV PATH=/usr/local/bin:/usr/bin:/bin"], key
        )


def _binary_image(tag: str, dockerfile: str, binary: Path) -> None:
    """``hack/images/kind-node/<dockerfile>`` built FROM the base image, with ``binary`` in its context."""
    source = HACK / "images" / "kind-node" / dockerfile
    key = _digest(binary.read_bytes(), source.read_bytes(), versions.BASE_IMAGE.encode())
    _labelled_build(tag, source, key, {binary.name: binary})


def _retag(source: str, tag: str) -> None:
    run([docker(), "tag", source, tag], quiet=True)


def node_images(kubeadm: Path, k8s: Path) -> list[str]:
    """Build every image the node runs (``k8s``: the Kubernetes binaries), tagged as kubeadm and kind's
    manifests name them."""
    ensure_pause_image()
    required = output([kubeadm, "config", "images", "list", "--kubernetes-version", versions.KUBERNETES]).split()
    tags: list[str] = []
    for tag in required:
        name = tag.rsplit("/", 1)[-1].split(":")[0]
        if name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
            _control_plane_image(tag, k8s / name)
        elif name == "kube-proxy":
            _binary_image(tag, "kube-proxy.Dockerfile", k8s / name)
        elif name == "etcd":
            tag = f"registry.k8s.io/etcd:{ETCD_TAG}"
            _control_plane_image(tag, binaries.etcd_bin_dir() / "etcd")
        elif name == "coredns":
            tag = f"registry.k8s.io/coredns/coredns:{COREDNS_TAG}"
            _binary_image(tag, "coredns.Dockerfile", binaries.coredns_bin_dir() / "coredns")
        elif name == "pause":
            _retag(versions.PAUSE_IMAGE, tag)
        else:
            raise ClusterError(f"kubeadm needs {tag}, which this build does not make")
        tags.append(tag)
    sandbox = "registry.k8s.io/pause:3.10"  # kind's containerd config (sandbox_image)
    _retag(versions.PAUSE_IMAGE, sandbox)
    return sorted({*tags, sandbox})


def build_node_image() -> str:
    """``make kind-node-image``: the node image, rebuilt only when one of its parts changed."""
    t = time.monotonic()
    ensure_docker()
    binaries.ensure_go_tools(TOOLS.values())  # crictl and kubeadm side by side
    ensure_kind_base()
    kubeadm = _tool("kubeadm")
    k8s = binaries.ensure_binaries(need_coredns=True)
    images = node_images(kubeadm, k8s)
    programs = [kubeadm, k8s / "kubelet", k8s / "kubectl"]
    files = {
        "/kind/version": versions.KUBERNETES + "\n",
        "/kind/manifests/default-cni.yaml": EMPTY_CNI_MANIFEST,
        "/kind/manifests/default-storage.yaml": EMPTY_STORAGE_MANIFEST,
        "/etc/cni/net.d/10-kindnet.conflist": json.dumps(STATIC_CNI, indent=2) + "\n",
    }
    ids = [output([docker(), "image", "inspect", "--format", "{{.Id}}", i]) for i in [KIND_BASE_IMAGE, *images]]
    key = _digest(*(i.encode() for i in ids), *(p.read_bytes() for p in programs), json.dumps(files).encode())
    image = versions.KIND_LOCAL_NODE_IMAGE
    if docker_label(image, SOURCE_LABEL) == key:
        log(f"{image} is up to date ({time.monotonic() - t:.1f}s)")
        return image
    with step(f"assemble {image}"):
        cid = output([docker(), "run", "-d", "--entrypoint=sleep", KIND_BASE_IMAGE, "infinity"])
        try:
            _assemble(cid, programs, files, images)
            commit = [docker(), "commit", "--change", 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]']
            run([*commit, "--change", f"LABEL {SOURCE_LABEL}={key}", cid, image], quiet=True)
        finally:
            run([docker(), "rm", "-f", "-v", cid], check=False, quiet=True)
    log(f"{image} built ({time.monotonic() - t:.1f}s)")
    return image


def _exec(cid: str, script: str, stdin: bytes | None = None) -> None:
    run([docker(), "exec", "-i", cid, "bash", "-euc", script], input=stdin, quiet=True)


def _assemble(cid: str, programs: list[Path], files: dict[str, str], images: list[str]) -> None:
    """In the build container ``cid``: the programs in /usr/bin, the files, and the images in containerd."""
    for program in programs:
        run([docker(), "cp", str(program), f"{cid}:/usr/bin/{program.name}"], quiet=True)
    for path, text in files.items():
        _exec(cid, f"mkdir -p {Path(path).parent} && cat > {path}", text.encode())
    _exec(cid, "nohup containerd > /var/log/containerd-build.log 2>&1 &")
    socket = "/run/containerd/containerd.sock"
    _exec(cid, f"for i in $(seq 50); do [ -S {socket} ] && ctr version >/dev/null && exit 0; sleep 0.2; done; exit 1")
    # As kind's build imports its images: pinned (never garbage-collected), unpacked on first use.
    load = [docker(), "exec", "-i", cid, "ctr", "--namespace=k8s.io", "images", "import"]
    load += ["--label=io.cri-containerd.pinned=pinned", "--all-platforms", "--no-unpack", "--digests", "-"]
    with subprocess.Popen([docker(), "save", *images], stdout=subprocess.PIPE) as save:
        imported = subprocess.run(load, stdin=save.stdout, capture_output=True, check=False)
    if save.returncode or imported.returncode:
        raise ClusterError(f"importing {images} into the node failed: {imported.stderr.decode()[-2000:]}")
    listed = output([docker(), "exec", cid, "ctr", "--namespace=k8s.io", "images", "list", "-q"]).split()
    missing = sorted(set(images) - {name.removeprefix("docker.io/library/") for name in listed} - set(listed))
    if missing:
        raise ClusterError(f"the node's containerd lacks {missing} after the import")
    _exec(cid, "pkill containerd; for i in $(seq 50); do pgrep containerd >/dev/null || exit 0; sleep 0.2; done")
