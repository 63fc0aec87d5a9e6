"""Certificates and kubeconfigs for the local cluster, made with the openssl CLI.

One CA signs everything: the apiserver serving cert, the apiserver's client cert for kubelets,
the kubelet serving cert, and client certs for admin, controller-manager, scheduler, kubelet
(``system:node:<node>`` in ``system:nodes``, for the Node authorizer) and kube-proxy. The
service-account token signing key pair is separate (RSA).
"""

from __future__ import annotations

import base64
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .common import run


@dataclass(frozen=True)
class Cert:
    name: str
    cn: str
    org: str | None = None
    server: bool = False
    client: bool = False
    sans: tuple[str, ...] = ()


def _openssl(*args: str | Path) -> None:
    run(["openssl", *args], quiet=True)


def _ec_key(path: Path) -> None:
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", path)
    path.chmod(0o600)


def make_ca(pki: Path) -> None:
    if (pki / "ca.crt").exists() and (pki / "ca.key").exists():
        return
    pki.mkdir(parents=True, exist_ok=True)
    _ec_key(pki / "ca.key")
    _openssl(
        "req",
        "-x509",
        "-new",
        "-key",
        pki / "ca.key",
        "-subj",
        "/CN=mlmodel-test-cluster-ca",
        "-days",
        "3650",
        "-out",
        pki / "ca.crt",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,digitalSignature,keyCertSign,cRLSign",
    )


def make_cert(pki: Path, c: Cert) -> None:
    crt, key = pki / f"{c.name}.crt", pki / f"{c.name}.key"
    if crt.exists() and key.exists():
        return
    _ec_key(key)
    subj = (f"/O={c.org}" if c.org else "") + f"/CN={c.cn}"
    usages = [u for u, on in (("serverAuth", c.server), ("clientAuth", c.client)) if on]
    ext = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage={','.join(usages)}",
    ]
    if c.sans:
        ext.append("subjectAltName=" + ",".join(c.sans))
    with tempfile.TemporaryDirectory() as td:
        csr, extfile = Path(td) / "csr", Path(td) / "ext"
        extfile.write_text("\n".join(ext) + "\n")
        _openssl("req", "-new", "-key", key, "-subj", subj, "-out", csr)
        _openssl(
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            pki / "ca.crt",
            "-CAkey",
            pki / "ca.key",
            "-set_serial",
            "0x" + _random_hex(16),
            "-days",
            "365",
            "-out",
            crt,
            "-extfile",
            extfile,
        )


def _random_hex(n: int) -> str:
    import secrets

    return secrets.token_hex(n)


def make_sa_keys(pki: Path) -> None:
    if (pki / "sa.key").exists() and (pki / "sa.pub").exists():
        return
    _openssl("genrsa", "-out", pki / "sa.key", "2048")
    (pki / "sa.key").chmod(0o600)
    _openssl("rsa", "-in", pki / "sa.key", "-pubout", "-out", pki / "sa.pub")


def kubeconfig(pki: Path, out: Path, user: str, cert: str, server: str, cluster: str = "mlmodel") -> None:
    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    out.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: {cluster}
  cluster:
    server: {server}
    certificate-authority-data: {b64(pki / "ca.crt")}
users:
- name: {user}
  user:
    client-certificate-data: {b64(pki / f"{cert}.crt")}
    client-key-data: {b64(pki / f"{cert}.key")}
contexts:
- name: {cluster}
  context:
    cluster: {cluster}
    user: {user}
    namespace: default
current-context: {cluster}
"""
    )
    out.chmod(0o600)


def make_all(pki: Path, node: str, node_ip: str, service_ip: str) -> None:
    make_ca(pki)
    make_sa_keys(pki)
    api_sans = (
        "DNS:kubernetes",
        "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local",
        "DNS:localhost",
        "IP:127.0.0.1",
        f"IP:{node_ip}",
        f"IP:{service_ip}",
    )
    for c in (
        Cert("apiserver", "kube-apiserver", server=True, sans=api_sans),
        Cert(
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            "system:masters",
            client=True,
        ),
        Cert(
            "kubelet-serving",
            node,
            server=True,
            sans=(f"DNS:{node}", "DNS:localhost", f"IP:{node_ip}", "IP:127.0.0.1"),
        ),
        Cert("admin", "mlmodel-admin", "system:masters", client=True),
        Cert("controller-manager", "system:kube-controller-manager", client=True),
        Cert("scheduler", "system:kube-scheduler", client=True),
        Cert("kubelet", f"system:node:{node}", "system:nodes", client=True),
        Cert("kube-proxy", "system:kube-proxy", client=True),
    ):
        make_cert(pki, c)
