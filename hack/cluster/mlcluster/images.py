"""The images built here: the base, pause, CoreDNS and the app images (loading them: a provider's).

Nothing can be pulled from a registry on this machine, so every image starts from
``mlmodel-base:bookworm`` (debootstrap + ``docker import``), the pause image (a static C
binary) or the CoreDNS binary. With internet access the same Dockerfiles build FROM official
images (their ``BASE_IMAGE`` defaults).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

from . import binaries, versions
from .common import CACHE, HACK, LOGS, ClusterError, run, step, tail
from .docker import docker, docker_build, docker_image_id, docker_label, ensure_docker


def ensure_base_image() -> None:
    """The base image, built once: a second caller (kind's lane builds its node image while the e2e lane builds the
    app images) waits for the first and finds it."""
    if docker_image_id(versions.BASE_IMAGE):
        return
    cache = CACHE / "images"
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / "base.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not docker_image_id(versions.BASE_IMAGE):
            _build_base_image(cache)


def _build_base_image(cache: Path) -> None:
    binaries.ensure_debian_packages(["/usr/sbin/debootstrap"])
    with step(f"build {versions.BASE_IMAGE} (debootstrap bookworm minbase; cold ~3 min)"):
        logfile = LOGS / "build-base-image.log"
        with logfile.open("ab") as out:
            p = subprocess.run(
                [
                    "bash",
                    str(HACK / "images" / "base" / "build.sh"),
                    versions.BASE_IMAGE,
                    str(cache),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "DOCKER": docker()},
                check=False,
            )
        if p.returncode:
            raise ClusterError(f"base image build failed:\n{tail(logfile)}\n--- full log: {logfile}")


def ensure_pause_image() -> None:
    src = HACK / "images" / "pause" / "pause.c"
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    if docker_label(versions.PAUSE_IMAGE, "mlmodel.source") == digest:
        return
    binaries.ensure_debian_packages(["/usr/bin/gcc", "/usr/lib/x86_64-linux-gnu/libc.a"])
    with step(f"build {versions.PAUSE_IMAGE}"):
        run(
            [
                "bash",
                str(HACK / "images" / "pause" / "build.sh"),
                versions.PAUSE_IMAGE,
                digest,
            ],
            env={"DOCKER": docker()},
            quiet=True,
        )


def import_single_binary(image: str, binary: Path, name: str, changes: list[str], label: str) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tar.gettarinfo(str(binary), arcname=name)
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mode = 0o755
        with binary.open("rb") as f:
            tar.addfile(info, f)
        for d in ("tmp", "etc"):
            ti = tarfile.TarInfo(d)
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o1777 if d == "tmp" else 0o755
            tar.addfile(ti)
    args = [docker(), "import"]
    for c in [*changes, f"LABEL mlmodel.source={label}"]:
        args += ["--change", c]
    run([*args, "-", image], input=buf.getvalue(), quiet=True)


def build_coredns_image(binary: Path) -> None:
    digest = hashlib.sha256(binary.read_bytes()).hexdigest()[:16]
    if docker_label(versions.COREDNS_IMAGE, "mlmodel.source") == digest:
        return
    with step(f"build {versions.COREDNS_IMAGE} from the CoreDNS binary"):
        import_single_binary(
            versions.COREDNS_IMAGE,
            binary,
            "coredns",
            ['ENTRYPOINT ["/coredns"]', "USER 65532:65532", "EXPOSE 1053 1053/udp"],
            digest,
        )


def build_prometheus_image() -> None:
    """``versions.PROMETHEUS_IMAGE``: the pinned Prometheus (``ensure_go_tool``, as ``make tools`` builds it) as
    ``/bin/prometheus``, run as nobody with its data in ``/prometheus``, like the official image."""
    directory = binaries.ensure_go_tool("prometheus", versions.PROMETHEUS, ("prometheus", "promtool"))
    binary = directory / "prometheus"
    digest = hashlib.sha256(binary.read_bytes()).hexdigest()[:16]
    if docker_label(versions.PROMETHEUS_IMAGE, "mlmodel.source") == digest:
        return
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, mode, owner in (
            ("bin", 0o755, 0),
            ("etc", 0o755, 0),
            ("tmp", 0o1777, 0),
            ("prometheus", 0o755, 65534),
        ):
            entry = tarfile.TarInfo(name)
            entry.type, entry.mode, entry.uid, entry.gid = tarfile.DIRTYPE, mode, owner, owner
            tar.addfile(entry)
        info = tar.gettarinfo(str(binary), arcname="bin/prometheus")
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mode = 0o755
        with binary.open("rb") as f:
            tar.addfile(info, f)
    changes = ['ENTRYPOINT ["/bin/prometheus"]', "USER 65534:65534", "WORKDIR /prometheus", "EXPOSE 9090"]
    with step(f"build {versions.PROMETHEUS_IMAGE} from the Prometheus binary"):
        args = [docker(), "import"]
        for c in [*changes, f"LABEL mlmodel.source={digest}"]:
            args += ["--change", c]
        run([*args, "-", versions.PROMETHEUS_IMAGE], input=buf.getvalue(), quiet=True)


def build_app_images(*, examples: bool = True) -> list[str]:
    """Build the server, operator and router images, Prometheus's for Docker Compose, and (``examples``) the MLflow
    tracking server's that ``manifests/examples/mlflow.yaml`` runs; the names of those the cluster runs."""
    ensure_docker()
    ensure_base_image()
    base = {"BASE_IMAGE": versions.BASE_IMAGE}
    docker_build(versions.SERVER_IMAGE, "Dockerfile.server", None, base)
    docker_build(versions.OPERATOR_IMAGE, "Dockerfile.operator", None, base)
    docker_build(versions.ROUTER_IMAGE, "Dockerfile.router", None, base)
    build_prometheus_image()  # Docker Compose's (`mlmodel compose render --with-prometheus`): not the cluster's
    built = [versions.SERVER_IMAGE, versions.OPERATOR_IMAGE, versions.ROUTER_IMAGE]
    if examples:
        mlflow = {**base, "MLFLOW_VERSION": versions.MLFLOW}
        docker_build(versions.MLFLOW_IMAGE, "Dockerfile", HACK / "images" / "mlflow", mlflow)
        built.append(versions.MLFLOW_IMAGE)
    return built
