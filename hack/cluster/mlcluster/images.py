"""Docker daemon, locally built images, and loading them into the cluster's runtime.

Nothing can be pulled from a registry on this machine, so every image starts from
``mlmodel-base:bookworm`` (debootstrap + ``docker import``), the pause image (a static C
binary) or the CoreDNS binary. With internet access the same Dockerfiles build FROM official
images (their ``BASE_IMAGE`` defaults).
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
import time
from pathlib import Path

from . import binaries, versions
from .common import (
    CACHE,
    HACK,
    LOGS,
    REPO,
    ClusterError,
    Daemon,
    log,
    ok,
    run,
    step,
    tail,
    wait_for,
)

CA_BUNDLE = os.environ.get("MLMODEL_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
DOCKERD = Daemon("dockerd")


def docker() -> str:
    """The docker CLI. Debian's 20.10 CLI has BuildKit built in (the 28.x one needs buildx)."""
    if os.environ.get("DOCKER"):
        return os.environ["DOCKER"]
    return "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"


def ensure_docker() -> None:
    """Start dockerd (logging to .cluster/logs/dockerd.log) unless a daemon already answers.

    dockerd is the image builder, not part of the cluster: ``cluster-down`` leaves it running.
    """
    if ok([docker(), "info"], timeout=20):
        return
    binaries.ensure_debian_packages(["/usr/sbin/dockerd"])
    with step("start dockerd"):
        DOCKERD.start(["dockerd"])
        wait_for(
            "dockerd",
            lambda: ok([docker(), "info"], timeout=10),
            90,
            interval=1,
            on_timeout=lambda: ClusterError(f"dockerd did not come up:\n{tail(LOGS / 'dockerd.log')}"),
        )


def docker_image_id(image: str) -> str | None:
    p = run(
        [docker(), "image", "inspect", "--format", "{{.Id}}", image],
        check=False,
        quiet=True,
    )
    return p.stdout.decode().strip() if p.returncode == 0 else None


def docker_label(image: str, label: str) -> str | None:
    p = run(
        [
            docker(),
            "image",
            "inspect",
            "--format",
            f'{{{{index .Config.Labels "{label}"}}}}',
            image,
        ],
        check=False,
        quiet=True,
    )
    return p.stdout.decode().strip() if p.returncode == 0 else None


def ensure_base_image() -> None:
    if docker_image_id(versions.BASE_IMAGE):
        return
    binaries.ensure_debian_packages(["/usr/sbin/debootstrap"])
    cache = CACHE / "images"
    cache.mkdir(parents=True, exist_ok=True)
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


def _import_single_binary(image: str, binary: Path, name: str, changes: list[str], label: str) -> None:
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
        _import_single_binary(
            versions.COREDNS_IMAGE,
            binary,
            "coredns",
            ['ENTRYPOINT ["/coredns"]', "USER 65532:65532", "EXPOSE 1053 1053/udp"],
            digest,
        )


def _build_context_tar() -> bytes:
    """The repo as a build context, without the cluster state, venv and VCS data.

    (A plain ``docker build .`` would upload .cluster/, which holds the cluster's container
    store, whatever .dockerignore says or doesn't.)
    """
    top = [".cluster", ".venv", ".git", ".demo", ".bench"]
    anywhere = [".mypy_cache", ".ruff_cache", ".pytest_cache", "__pycache__", "*.egg-info"]
    cmd = ["tar", "-C", str(REPO), "-c", "--warning=no-file-changed"]
    cmd += [f"--exclude=./{e}" for e in top] + [f"--exclude={e}" for e in anywhere] + ["."]
    # GNU tar exits 1 when a file changed while it was read (e.g. an editor's or linter's
    # cache being written): the context is still usable.
    p = run(cmd, capture=True, check=False)
    if p.returncode not in (0, 1):
        raise ClusterError(f"tar of the build context failed: {p.stderr.decode()[-2000:]}")
    return p.stdout


def docker_build(image: str, dockerfile: str, context: Path | None, build_args: dict[str, str]) -> None:
    """BuildKit build with the host CA available as secret ``ca`` (for pip/apt over TLS)."""
    args = [docker(), "build", "-t", image, "--secret", f"id=ca,src={CA_BUNDLE}"]
    for k, v in build_args.items():
        args += ["--build-arg", f"{k}={v}"]
    logfile = LOGS / f"build-{image.split(':')[0]}.log"
    LOGS.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DOCKER_BUILDKIT": "1", "BUILDKIT_PROGRESS": "plain"}
    with step(f"docker build {image} ({dockerfile}); log: {logfile}"):
        with logfile.open("wb") as out:
            if context is None:
                p = subprocess.run(
                    [*args, "-f", dockerfile, "-"],
                    input=_build_context_tar(),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    check=False,
                )
            else:
                p = subprocess.run(
                    [*args, "-f", str(context / dockerfile), str(context)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    check=False,
                )
        if p.returncode:
            raise ClusterError(f"docker build {image} failed:\n{tail(logfile, 40)}\n--- full log: {logfile}")


def build_app_images() -> list[str]:
    """Build server, operator (if Dockerfile.operator exists) and router images."""
    ensure_docker()
    ensure_base_image()
    base = {"BASE_IMAGE": versions.BASE_IMAGE}
    built: list[str] = []
    if not (REPO / "Dockerfile.server").exists():
        raise ClusterError("Dockerfile.server is missing at the repo root; cannot build the server image")
    docker_build(versions.SERVER_IMAGE, "Dockerfile.server", None, base)
    built.append(versions.SERVER_IMAGE)
    if (REPO / "Dockerfile.operator").exists():
        docker_build(versions.OPERATOR_IMAGE, "Dockerfile.operator", None, base)
        built.append(versions.OPERATOR_IMAGE)
    else:
        log("Dockerfile.operator does not exist yet: no operator image")
    docker_build(versions.ROUTER_IMAGE, "Dockerfile", HACK / "images" / "router", base)
    built.append(versions.ROUTER_IMAGE)
    return built


def images_main(provider: str) -> None:
    """`make images`: build the images and make them available to the cluster's runtime."""
    t = time.monotonic()
    built = build_app_images()
    if provider == "local":
        from .local import Local

        local = Local()
        if not local._ctr_ok():
            log(
                "the local cluster's containerd is not running: images built but not loaded "
                "(`make cluster-up` then `make images` loads them)"
            )
        else:
            for image in built:
                local.load_image(image)
    elif provider == "kind":
        from .kind import load_image

        for image in built:
            load_image(image)
    else:
        log(
            f"provider {provider}: images are built in the local docker only; push them to a "
            "registry the cluster can pull from"
        )
    log(f"images ready: {', '.join(built)} ({time.monotonic() - t:.1f}s)")
