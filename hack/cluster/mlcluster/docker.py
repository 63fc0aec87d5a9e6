"""Docker: the daemon that builds the images here (and runs kind's nodes), and its builds.

dockerd is the image builder, not part of a cluster: ``cluster-down`` leaves it running.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from . import binaries
from .common import CACHE, HACK, LOGS, REPO, ClusterError, Daemon, ok, run, step, tail, wait_for

CA_BUNDLE = os.environ.get("MLMODEL_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
DOCKERD = Daemon("dockerd")


def docker() -> str:
    """The docker CLI. Debian's 20.10 CLI has BuildKit built in (the 28.x one needs buildx)."""
    if os.environ.get("DOCKER"):
        return os.environ["DOCKER"]
    return "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"


HELD_CAPS = "held-caps"  # dockerd's default runtime when this harness starts it: see hack/cluster/runc-held-caps


def held_caps_runtime() -> Path:
    """A copy of ``hack/cluster/runc-held-caps`` in the cache: dockerd outlives the checkout that started it."""
    source = HACK / "cluster" / "runc-held-caps"
    target = CACHE / "bin" / source.name
    if not target.exists() or target.read_bytes() != source.read_bytes():
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.with_name(f".{source.name}.{os.getpid()}")
        shutil.copy2(source, staged)
        staged.replace(target)
    return target


def ensure_docker() -> None:
    """Start dockerd (logging to .cluster/logs/dockerd.log) unless a daemon already answers.

    dockerd is the image builder, not part of the cluster: ``cluster-down`` leaves it running.
    """
    if ok([docker(), "info"], timeout=20):
        return
    binaries.ensure_debian_packages(["/usr/sbin/dockerd"])
    with step("start dockerd"):
        runtime = f"{HELD_CAPS}={held_caps_runtime()}"
        DOCKERD.start(["dockerd", "--add-runtime", runtime, "--default-runtime", HELD_CAPS])
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


def _build_context_tar() -> bytes:
    """The repo as a build context, without the cluster state, venv and VCS data.

    (A plain ``docker build .`` would upload .cluster/, which holds the cluster's container
    store, whatever .dockerignore says or doesn't.)
    """
    top = [".cluster", ".venv", ".git", ".demo", ".demo-compose", ".bench"]
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
    logfile = LOGS / f"build-{image.split(':')[0].replace('/', '-')}.log"
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
