"""The ``local`` provider: a one-node cluster made of host processes on this machine.

Layout (all state under ``.cluster/``, sockets under ``/run/mlmodel-<hash>/``):

* etcd (loopback only) -> kube-apiserver (:6443, RBAC+Node authz) -> kube-controller-manager
  (all default controllers: GC, HPA, ...) -> kube-scheduler. That much is the
  ``--control-plane-only`` cluster.
* containerd (Debian 1.6, its own root/state/socket, CRI plugin, sandbox image = our pause
  image) + runc -> kubelet (cgroupfs driver, cgroup v1) with node name ``mlmodel-node``.
* Pod network: the CNI ``bridge`` plugin on bridge ``mlbr0`` (10.244.0.1/24, created up front
  because it is also the node's InternalIP) with ``host-local`` IPAM, plus ``portmap``. No
  masquerading to the outside: pods can reach the node and each other, nothing else.
* kube-proxy in iptables mode; Service IPs (10.96.0.0/16) are routed to ``mlmodel`` bridge so
  nothing for a Service ever leaves through the default route.
* NetworkPolicies enforced by kube-router's firewall alone (iptables and ipsets on the bridged traffic),
  run as a host process beside kube-proxy: see ``versions.KUBE_ROUTER`` for why not kind's agent.
* CoreDNS as a Deployment in kube-system (image built here from the binary), Service
  ``kube-dns`` at 10.96.0.10, serving only ``cluster.local`` and reverse zones (no upstream).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import ssl
import time
import urllib.request
from pathlib import Path

from . import binaries, pki, versions
from .cleanup import teardown_local
from .common import (
    KUBECONFIG,
    LOGS,
    RUN,
    SOCKDIR,
    STATE,
    ClusterError,
    Daemon,
    component_failure,
    log,
    ok,
    output,
    run,
    step,
    wait_for,
)
from .docker import docker, docker_image_id, ensure_docker
from .images import build_coredns_image, ensure_base_image, ensure_pause_image
from .localnode import (
    ALL_DAEMONS,
    APISERVER,
    BRIDGE,
    CONTAINERD,
    CONTROLLER_MANAGER,
    ETCD,
    KUBE_PROXY,
    KUBE_ROUTER,
    KUBELET,
    NODE,
    SCHEDULER,
)

NODE_IP = "10.244.0.1"
POD_SUBNET = "10.244.0.0/24"
CLUSTER_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_SVC_IP = "10.96.0.1"
DNS_IP = "10.96.0.10"
API_PORT = 6443
ETCD_CLIENT = "127.0.0.1:2379"
ETCD_PEER = "127.0.0.1:2380"
FORWARD_CHAIN = "MLMODEL-FORWARD"
# FORWARD_CHAIN's rules. Docker (if running) sets FORWARD's policy to DROP: bridged pod traffic goes through. And
# traffic within one Docker network (bridged on a ``br-`` bridge) goes through too: kube-router's firewall rewrites the
# whole filter table from a snapshot (iptables-save, then iptables-restore -T filter) at each pod change, and the
# rules Docker adds meanwhile for a new network are lost, so that a Compose project started beside this cluster had
# containers that could not reach each other (its router's probes of the variants timed out until it gave up).
FORWARD_RULES = (
    ("-i", BRIDGE, "-j", "ACCEPT"),
    ("-o", BRIDGE, "-j", "ACCEPT"),
    ("-i", "br-+", "-o", "br-+", "-m", "physdev", "--physdev-is-bridged", "-j", "ACCEPT"),
)
KUBE_ROUTER_HEALTH_PORT = 20244

PKI = STATE / "pki"
ETC = STATE / "etc"
CONTAINERD_SOCK = SOCKDIR / "containerd.sock"
MODE_FILE = STATE / "mode"


def _insecure_get(url: str, timeout: float = 3) -> tuple[int, str]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def _healthy(url: str) -> bool:
    try:
        return _insecure_get(url)[0] == 200
    except OSError:
        return False


class Local:
    """The local provider (``provider.Provider``)."""

    name = "local"

    def __init__(self) -> None:
        self.bin: Path = binaries.k8s_bin_dir_cached()

    # --- helpers -----------------------------------------------------------------------------

    def kubectl(self, *args: str, input: bytes | None = None, check: bool = True) -> str:
        p = run(
            [self.bin / "kubectl", "--kubeconfig", KUBECONFIG, *args],
            capture=True,
            input=input,
            check=check,
            timeout=120,
        )
        return p.stdout.decode()

    def _start(
        self,
        d: Daemon,
        argv: list[str | Path],
        health: str | None,
        timeout: float = 90,
        configs: tuple[Path, ...] = (),
    ) -> None:
        fp = d.fingerprint(argv, configs)
        if d.current(fp) and (health is None or _healthy(health)):
            log(f"{d.name} already running (pid {d.pid()})")
            return
        if d.running():
            log(f"restarting {d.name} (configuration changed or unhealthy)")
            d.stop()
        with step(f"start {d.name}"):
            d.start(argv, fingerprint=fp)
            if health is not None:

                def probe() -> bool:
                    if not d.running():
                        raise component_failure(d.name, "exited during startup")
                    return _healthy(health)

                deadline = time.monotonic() + timeout
                while True:
                    if probe():
                        break
                    if time.monotonic() > deadline:
                        raise component_failure(d.name, f"not healthy at {health} after {timeout:.0f}s")
                    time.sleep(0.3)

    # --- steps -------------------------------------------------------------------------------

    def host_setup(self) -> None:
        with step("host network setup (sysctls, bridge, routes, forward rules)"):
            for key, val in (
                ("net/ipv4/ip_forward", "1"),
                ("net/bridge/bridge-nf-call-iptables", "1"),
                ("net/bridge/bridge-nf-call-ip6tables", "1"),
            ):
                p = Path("/proc/sys") / key
                if p.exists() and p.read_text().strip() != val:
                    p.write_text(val)
            if not Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists():
                run(["modprobe", "br_netfilter"], check=False, quiet=True)
            if not ok(["ip", "link", "show", BRIDGE]):
                run(["ip", "link", "add", BRIDGE, "type", "bridge"])
            run(["ip", "link", "set", BRIDGE, "up"])
            if NODE_IP not in output(["ip", "-4", "addr", "show", "dev", BRIDGE]):
                run(["ip", "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE])
            # Service IPs are virtual; route them to our bridge so that, should kube-proxy have
            # no rule for one, the packet goes nowhere instead of out of the default route.
            run(["ip", "route", "replace", SERVICE_CIDR, "dev", BRIDGE, "src", NODE_IP])
            if not ok(["iptables", "-t", "filter", "-S", FORWARD_CHAIN]):
                run(["iptables", "-t", "filter", "-N", FORWARD_CHAIN])
                for rule in FORWARD_RULES:
                    run(["iptables", "-t", "filter", "-A", FORWARD_CHAIN, *rule])
            if not ok(["iptables", "-t", "filter", "-C", "FORWARD", "-j", FORWARD_CHAIN]):
                run(["iptables", "-t", "filter", "-I", "FORWARD", "1", "-j", FORWARD_CHAIN])

    def certs(self) -> None:
        with step("certificates and kubeconfigs"):
            pki.make_all(PKI, NODE, NODE_IP, KUBERNETES_SVC_IP)
            server = f"https://127.0.0.1:{API_PORT}"
            for user, cert, name in (
                ("mlmodel-admin", "admin", "admin.kubeconfig"),
                (
                    "system:kube-controller-manager",
                    "controller-manager",
                    "controller-manager.kubeconfig",
                ),
                ("system:kube-scheduler", "scheduler", "scheduler.kubeconfig"),
                (f"system:node:{NODE}", "kubelet", "kubelet.kubeconfig"),
                ("system:kube-proxy", "kube-proxy", "kube-proxy.kubeconfig"),
            ):
                pki.kubeconfig(PKI, PKI / name, user, cert, server)
            KUBECONFIG.write_bytes((PKI / "admin.kubeconfig").read_bytes())
            KUBECONFIG.chmod(0o600)

    def etcd(self) -> None:
        etcd = binaries.etcd_bin_dir() / "etcd"
        self._start(
            ETCD,
            [
                etcd,
                "--name",
                "mlmodel",
                "--data-dir",
                STATE / "etcd",
                "--listen-client-urls",
                f"http://{ETCD_CLIENT}",
                "--advertise-client-urls",
                f"http://{ETCD_CLIENT}",
                "--listen-peer-urls",
                f"http://{ETCD_PEER}",
                "--initial-advertise-peer-urls",
                f"http://{ETCD_PEER}",
                "--initial-cluster",
                f"mlmodel=http://{ETCD_PEER}",
                "--listen-metrics-urls",
                "http://127.0.0.1:2381",
                # A throwaway test cluster: durability is not worth the fsync latency.
                "--unsafe-no-fsync",
                "--snapshot-count",
                "10000",
                "--log-level",
                "warn",
            ],
            "http://127.0.0.1:2381/health",
        )

    def apiserver(self) -> None:
        p = PKI
        self._start(
            APISERVER,
            [
                self.bin / "kube-apiserver",
                f"--etcd-servers=http://{ETCD_CLIENT}",
                "--bind-address=0.0.0.0",
                f"--secure-port={API_PORT}",
                f"--advertise-address={NODE_IP}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                "--authorization-mode=Node,RBAC",
                # Owner references with blockOwnerDeletion need update on the owner's finalizers, as on
                # clusters (OpenShift's among them) that enforce it: the operator's RBAC is tested against it.
                "--enable-admission-plugins=NodeRestriction,OwnerReferencesPermissionEnforcement",
                f"--client-ca-file={p / 'ca.crt'}",
                f"--tls-cert-file={p / 'apiserver.crt'}",
                f"--tls-private-key-file={p / 'apiserver.key'}",
                f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
                f"--kubelet-certificate-authority={p / 'ca.crt'}",
                "--kubelet-preferred-address-types=InternalIP",
                f"--service-account-key-file={p / 'sa.pub'}",
                f"--service-account-signing-key-file={p / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--profiling=false",
                "--v=1",
            ],
            f"https://127.0.0.1:{API_PORT}/livez",
            timeout=120,
        )
        with step("wait for the API server to be ready"):
            wait_for(
                "kube-apiserver /readyz",
                lambda: ok(
                    [
                        self.bin / "kubectl",
                        "--kubeconfig",
                        KUBECONFIG,
                        "get",
                        "--raw",
                        "/readyz",
                    ]
                ),
                120,
                on_timeout=lambda: component_failure("kube-apiserver", "not ready"),
            )

    def controller_manager(self) -> None:
        p = PKI
        kc = p / "controller-manager.kubeconfig"
        self._start(
            CONTROLLER_MANAGER,
            [
                self.bin / "kube-controller-manager",
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1",
                "--secure-port=10257",
                "--leader-elect=false",
                "--controllers=*",  # all on-by-default controllers, incl. garbage collector and HPA
                f"--cluster-signing-cert-file={p / 'ca.crt'}",
                f"--cluster-signing-key-file={p / 'ca.key'}",
                f"--root-ca-file={p / 'ca.crt'}",
                f"--service-account-private-key-file={p / 'sa.key'}",
                "--use-service-account-credentials=true",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--profiling=false",
                "--v=1",
            ],
            "https://127.0.0.1:10257/healthz",
        )

    def scheduler(self) -> None:
        kc = PKI / "scheduler.kubeconfig"
        self._start(
            SCHEDULER,
            [
                self.bin / "kube-scheduler",
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1",
                "--secure-port=10259",
                "--leader-elect=false",
                "--profiling=false",
                "--v=1",
            ],
            "https://127.0.0.1:10259/healthz",
        )

    def containerd(self) -> None:
        ETC.mkdir(parents=True, exist_ok=True)
        cni_dir = ETC / "cni"
        cni_dir.mkdir(exist_ok=True)
        (cni_dir / "10-mlmodel.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "0.4.0",
                    "name": "mlmodel",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": BRIDGE,
                            "isGateway": True,
                            "ipMasq": False,
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": POD_SUBNET, "gateway": NODE_IP}]],
                                "routes": [{"dst": "0.0.0.0/0"}],
                                "dataDir": str(STATE / "cni-ipam"),
                            },
                        },
                        {"type": "portmap", "capabilities": {"portMappings": True}},
                    ],
                },
                indent=2,
            )
        )
        conf = ETC / "containerd.toml"
        conf.write_text(
            f"""version = 2
root = "{STATE / "containerd" / "root"}"
state = "{SOCKDIR / "containerd-state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{CONTAINERD_SOCK}"
[ttrpc]
  address = "{SOCKDIR / "containerd.sock.ttrpc"}"
[debug]
  level = "warn"
[plugins."io.containerd.internal.v1.opt"]
  path = "{STATE / "containerd" / "opt"}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/library/{versions.PAUSE_IMAGE}"
  stream_server_address = "127.0.0.1"
  enable_selinux = false
  # Sandboxes and Guaranteed pods ask for a negative oom_score_adj; lowering it needs
  # CAP_SYS_RESOURCE, which this machine's root lacks (CapEff has bit 24 clear), and runc
  # then dies with "failed to update /proc/self/oom_score_adj: Permission denied". Clamp
  # container scores to containerd's own instead (what rootless setups do).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{binaries.CNI_BIN_DIR}"
    conf_dir = "{cni_dir}"
    max_conf_num = 1
"""
        )
        SOCKDIR.mkdir(parents=True, exist_ok=True)
        argv: list[str | Path] = ["containerd", "--config", conf]
        fp = CONTAINERD.fingerprint(argv, (conf,))
        if CONTAINERD.current(fp) and self.ctr_ok():
            log(f"containerd already running (pid {CONTAINERD.pid()})")
            return
        CONTAINERD.stop()
        with step("start containerd"):
            CONTAINERD.start(argv, fingerprint=fp)
            wait_for(
                "containerd socket",
                lambda: self.ctr_ok() if CONTAINERD.running() else _raise(component_failure("containerd", "exited")),
                60,
                on_timeout=lambda: component_failure("containerd", "socket not answering"),
            )

    def ctr(self, *args: str | Path, input: bytes | None = None, check: bool = True) -> str:
        p = run(
            ["ctr", "--address", CONTAINERD_SOCK, "--namespace", "k8s.io", *args],
            capture=True,
            input=input,
            check=check,
            timeout=600,
        )
        return p.stdout.decode()

    def can_load(self) -> bool:
        return self.ctr_ok()

    def ctr_ok(self) -> bool:
        return ok(["ctr", "--address", CONTAINERD_SOCK, "version"], timeout=10)

    def load_image(self, image: str) -> None:
        """docker save IMAGE | ctr -n k8s.io images import - (skipped when already there)."""
        image_id = docker_image_id(image)
        if image_id is None:
            raise ClusterError(f"image {image} is not in docker; build it first (make images)")
        marker = RUN / "images" / image.replace("/", "_").replace(":", "_")
        ref = image if "/" in image else f"docker.io/library/{image}"
        if marker.exists() and marker.read_text() == image_id and ref in self.ctr("images", "ls", "-q"):
            return
        with step(f"load {image} into containerd (k8s.io namespace)"):
            saved = run([docker(), "save", image], capture=True).stdout
            self.ctr("images", "import", "-", input=saved)
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(image_id)

    def kubelet(self) -> None:
        ETC.mkdir(parents=True, exist_ok=True)
        resolv = ETC / "resolv.conf"
        resolv.write_text("# pods of the mlmodel test cluster get no upstream DNS\n")
        conf = ETC / "kubelet.yaml"
        conf.write_text(
            f"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {NODE_IP}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {PKI / "ca.crt"}}}
authorization:
  mode: Webhook
tlsCertFile: {PKI / "kubelet-serving.crt"}
tlsPrivateKeyFile: {PKI / "kubelet-serving.key"}
# This host has cgroup v1 only; 1.34 allows it (see versions.py). Driver must match containerd.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://{CONTAINERD_SOCK}
imageServiceEndpoint: unix://{CONTAINERD_SOCK}
clusterDomain: cluster.local
clusterDNS: [{DNS_IP}]
resolvConf: {resolv}
podLogsDir: {STATE / "pod-logs"}
hairpinMode: hairpin-veth
failSwapOn: false
serializeImagePulls: false
rotateCertificates: false
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
evictionHard:
  memory.available: 100Mi
  nodefs.available: 2%
  nodefs.inodesFree: 2%
  imagefs.available: 2%
"""
        )
        self._start(
            KUBELET,
            [
                self.bin / "kubelet",
                f"--config={conf}",
                f"--kubeconfig={PKI / 'kubelet.kubeconfig'}",
                f"--root-dir={STATE / 'kubelet'}",
                f"--hostname-override={NODE}",
                f"--node-ip={NODE_IP}",
                "--v=1",
            ],
            "http://127.0.0.1:10248/healthz",
            timeout=120,
            configs=(conf,),
        )

    def wait_node_ready(self) -> None:
        def ready() -> bool:
            if not KUBELET.running():
                raise component_failure("kubelet", "exited")
            out = self.kubectl(
                "get",
                "node",
                NODE,
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                check=False,
            )
            return out.strip() == "True"

        with step(f"wait for node {NODE} to be Ready"):
            wait_for(
                f"node {NODE} Ready",
                ready,
                180,
                interval=1,
                on_timeout=lambda: component_failure("kubelet", "node not Ready"),
            )

    def kube_proxy(self) -> None:
        conf = ETC / "kube-proxy.yaml"
        conf.write_text(
            f"""apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {PKI / "kube-proxy.kubeconfig"}
mode: iptables
hostnameOverride: {NODE}
clusterCIDR: {CLUSTER_CIDR}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# NodePorts only on the node's bridge address (never on the machine's real interfaces).
nodePortAddresses: ["{NODE_IP}/32"]
iptables:
  localhostNodePorts: false
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
"""
        )
        self._start(
            KUBE_PROXY,
            [self.bin / "kube-proxy", f"--config={conf}", "--v=1"],
            "http://127.0.0.1:10256/healthz",
            timeout=60,
            configs=(conf,),
        )

    def network_policies(self) -> None:
        """kube-router's firewall: NetworkPolicies enforced with iptables and ipsets (see versions.KUBE_ROUTER)."""
        self._start(
            KUBE_ROUTER,
            [
                binaries.kube_router_bin_dir() / "kube-router",
                f"--kubeconfig={KUBECONFIG}",
                f"--hostname-override={NODE}",
                "--run-firewall=true",
                "--run-router=false",
                "--run-service-proxy=false",
                "--enable-cni=false",
                f"--health-port={KUBE_ROUTER_HEALTH_PORT}",
                "--v=1",
            ],
            f"http://127.0.0.1:{KUBE_ROUTER_HEALTH_PORT}/healthz",
            timeout=60,
        )

    def coredns(self) -> None:
        build_coredns_image(binaries.coredns_bin_dir() / "coredns")
        self.load_image(versions.COREDNS_IMAGE)
        with step("deploy CoreDNS"):
            self.kubectl("apply", "-f", "-", input=coredns_manifest().encode())

            def ready() -> bool:
                jsonpath = "jsonpath={.status.readyReplicas}"
                out = self.kubectl("-n", "kube-system", "get", "deploy", "coredns", "-o", jsonpath, check=False)
                return out.strip() == "1"

            def failure() -> ClusterError:
                sel = ("-n", "kube-system", "-l", "k8s-app=kube-dns")
                describe = self.kubectl("describe", "pods", *sel, check=False)[-4000:]
                logs = self.kubectl("logs", *sel, "--tail=30", check=False)
                return ClusterError(f"CoreDNS not ready:\n{describe}\n{logs}")

            wait_for("CoreDNS rollout", ready, 180, interval=1, on_timeout=failure)

    # --- entry points ------------------------------------------------------------------------

    def up(self, control_plane_only: bool = False) -> None:
        os.umask(0o022)
        STATE.mkdir(parents=True, exist_ok=True)
        LOGS.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            raise ClusterError("the local provider needs root (it runs kubelet, containerd, iptables)")
        binaries.ensure_debian_packages()
        if control_plane_only:
            self.bin = binaries.ensure_binaries(need_coredns=False)
        else:
            # The images' base (debootstrap: 2 minutes of downloads, little CPU) is built while the Go builds of a
            # cold cache run, not after them: every image the tests run, and kind's node image, start from it.
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                base = pool.submit(_docker_and_base_image)
                self.bin = binaries.ensure_binaries(need_coredns=True)
                base.result()
        self.host_setup()
        self.certs()
        self.etcd()
        self.apiserver()
        self.controller_manager()
        self.scheduler()
        if control_plane_only:
            MODE_FILE.write_text("control-plane\n")
            return
        MODE_FILE.write_text("full\n")
        self.containerd()
        ensure_pause_image()  # dockerd is up: _docker_and_base_image started it
        self.load_image(versions.PAUSE_IMAGE)
        self.kubelet()
        self.wait_node_ready()
        self.kube_proxy()
        self.network_policies()
        self.coredns()

    def down(self) -> None:
        teardown_local(self)

    def status(self) -> dict[str, object]:
        return {d.name: d.pid() for d in ALL_DAEMONS}


def _docker_and_base_image() -> None:
    ensure_docker()
    ensure_base_image()


def _raise(e: Exception) -> bool:
    raise e


def coredns_manifest() -> str:
    """ServiceAccount/RBAC/ConfigMap/Deployment/Service for CoreDNS (restricted pod, port 1053)."""
    return f"""apiVersion: v1
kind: ServiceAccount
metadata: {{name: coredns, namespace: kube-system}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: "system:coredns"}}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: "system:coredns"}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}}
subjects:
- {{kind: ServiceAccount, name: coredns, namespace: kube-system}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: coredns, namespace: kube-system}}
data:
  Corefile: |
    cluster.local:1053 in-addr.arpa:1053 ip6.arpa:1053 {{
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {{
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
            ttl 30
        }}
        cache 30
        reload
        loadbalance
    }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: {{k8s-app: kube-dns}}
spec:
  replicas: 1
  selector:
    matchLabels: {{k8s-app: kube-dns}}
  template:
    metadata:
      labels: {{k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      dnsPolicy: Default
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        seccompProfile: {{type: RuntimeDefault}}
      containers:
      - name: coredns
        image: {versions.COREDNS_IMAGE}
        imagePullPolicy: Never
        args: ["-conf", "/etc/coredns/Corefile"]
        ports:
        - {{name: dns, containerPort: 1053, protocol: UDP}}
        - {{name: dns-tcp, containerPort: 1053, protocol: TCP}}
        resources:
          requests: {{cpu: 50m, memory: 40Mi}}
          limits: {{memory: 170Mi}}
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {{drop: [ALL]}}
        livenessProbe:
          httpGet: {{path: /health, port: 8080}}
          periodSeconds: 10
        readinessProbe:
          httpGet: {{path: /ready, port: 8181}}
          periodSeconds: 2
        volumeMounts:
        - {{name: config, mountPath: /etc/coredns, readOnly: true}}
      volumes:
      - name: config
        configMap: {{name: coredns}}
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {{k8s-app: kube-dns}}
spec:
  clusterIP: {DNS_IP}
  selector: {{k8s-app: kube-dns}}
  ports:
  - {{name: dns, port: 53, targetPort: 1053, protocol: UDP}}
  - {{name: dns-tcp, port: 53, targetPort: 1053, protocol: TCP}}
"""
