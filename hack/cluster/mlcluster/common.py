"""Paths, progress output, subprocess helpers and daemon (pid file) management."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
HACK = REPO / "hack"


def _state_dir() -> Path:
    return Path(os.environ.get("MLMODEL_CLUSTER_DIR", str(REPO / ".cluster"))).resolve()


STATE = _state_dir()
CACHE = Path(os.environ.get("MLMODEL_CACHE_DIR", str(Path.home() / ".cache" / "mlmodel"))).resolve()
LOGS = STATE / "logs"
RUN = STATE / "run"
KUBECONFIG = STATE / "kubeconfig"
PROVIDER_FILE = STATE / "provider"
# Unix sockets have a 108-byte path limit, so they live in a short directory keyed off STATE.
SOCKDIR = Path("/run/mlmodel-" + hashlib.sha256(str(STATE).encode()).hexdigest()[:10])

_T0 = time.monotonic()


class ClusterError(RuntimeError):
    """A step failed; the message says what and where the logs are."""


def log(msg: str) -> None:
    print(f"[cluster {time.monotonic() - _T0:6.1f}s] {msg}", flush=True)


def warn(msg: str) -> None:
    print(
        f"[cluster {time.monotonic() - _T0:6.1f}s] WARNING: {msg}",
        file=sys.stderr,
        flush=True,
    )


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """Print a step with its duration."""
    t = time.monotonic()
    log(f"{name} ...")
    try:
        yield
    except BaseException:
        log(f"{name} FAILED after {time.monotonic() - t:.1f}s")
        raise
    log(f"{name} done ({time.monotonic() - t:.1f}s)")


def tail(path: Path, lines: int = 25) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def component_failure(component: str, what: str) -> ClusterError:
    """An error that shows the end of a component's log and where the full log is."""
    logfile = LOGS / f"{component}.log"
    return ClusterError(
        f"{component}: {what}\n--- last lines of {logfile} ---\n{tail(logfile)}\n--- full log: {logfile}"
    )


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    check: bool = True,
    capture: bool = False,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    cwd: Path | None = None,
    quiet: bool = False,
) -> subprocess.CompletedProcess[bytes]:
    """Run a command; on failure raise ClusterError with its output."""
    args = [str(c) for c in cmd]
    full_env = None if env is None else {**os.environ, **env}
    try:
        p = subprocess.run(
            args,
            input=input,
            env=full_env,
            cwd=cwd,
            timeout=timeout,
            stdout=subprocess.PIPE if (capture or quiet) else None,
            stderr=subprocess.PIPE if (capture or quiet) else None,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise ClusterError(f"timed out after {timeout}s: {' '.join(args)}") from e
    except FileNotFoundError as e:
        raise ClusterError(f"command not found: {args[0]}") from e
    if check and p.returncode != 0:
        out = (p.stdout or b"").decode(errors="replace") + (p.stderr or b"").decode(errors="replace")
        raise ClusterError(f"command failed ({p.returncode}): {' '.join(args)}\n{out[-3000:]}")
    return p


def output(cmd: Sequence[str | os.PathLike[str]], **kw: object) -> str:
    return run(cmd, capture=True, **kw).stdout.decode().strip()  # type: ignore[arg-type]


def ok(cmd: Sequence[str | os.PathLike[str]], timeout: float = 30) -> bool:
    try:
        return run(cmd, check=False, quiet=True, timeout=timeout).returncode == 0
    except ClusterError:
        return False


def wait_for(
    what: str,
    probe: Callable[[], bool],
    timeout: float,
    interval: float = 0.5,
    on_timeout: Callable[[], ClusterError] | None = None,
) -> None:
    """Poll probe() until it is true or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if probe():
                return
        except Exception:  # noqa: BLE001 - a probe that raises just means "not yet"
            pass
        if time.monotonic() > deadline:
            if on_timeout is not None:
                raise on_timeout()
            raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def which(name: str) -> str | None:
    return shutil.which(name)


# --- daemons ---------------------------------------------------------------------------------


@dataclass
class Daemon:
    """A long-running process of the cluster, with its pid file and log under STATE."""

    name: str

    @property
    def pidfile(self) -> Path:
        return RUN / f"{self.name}.pid"

    @property
    def logfile(self) -> Path:
        return LOGS / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def running(self) -> bool:
        return self.pid() is not None

    @property
    def fpfile(self) -> Path:
        return RUN / f"{self.name}.fingerprint"

    def fingerprint(self, argv: Sequence[str | os.PathLike[str]], configs: Sequence[Path] = ()) -> str:
        """What the daemon was started with: argv and its config files' contents."""
        h = hashlib.sha256("\0".join(map(str, argv)).encode())
        for c in configs:
            h.update(c.read_bytes() if c.exists() else b"")
        return h.hexdigest()

    def current(self, fingerprint: str) -> bool:
        """Running, and started with this fingerprint."""
        try:
            return self.running() and self.fpfile.read_text() == fingerprint
        except OSError:
            return False

    def start(
        self,
        argv: Sequence[str | os.PathLike[str]],
        env: Mapping[str, str] | None = None,
        fingerprint: str | None = None,
    ) -> int:
        """Start argv detached (own session) with output appended to the log."""
        RUN.mkdir(parents=True, exist_ok=True)
        LOGS.mkdir(parents=True, exist_ok=True)
        with self.logfile.open("ab") as out:
            out.write(f"\n==== {time.ctime()} starting: {' '.join(map(str, argv))}\n".encode())
            out.flush()
            p = subprocess.Popen(
                [str(a) for a in argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
                close_fds=True,
            )
        self.pidfile.write_text(f"{p.pid}\n")
        self.fpfile.write_text(fingerprint or "")
        return p.pid

    def stop(self, timeout: float = 15) -> None:
        pid = self.pid()
        if pid is not None:
            kill_and_wait(pid, timeout)
        self.pidfile.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive for our purposes.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_and_wait(pid: int, timeout: float = 15) -> None:
    """SIGTERM, wait, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)


def processes() -> Iterator[tuple[int, list[str]]]:
    """All processes as (pid, argv)."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            raw = (d / "cmdline").read_bytes()
        except OSError:
            continue
        if raw:
            yield (
                int(d.name),
                [a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0")],
            )
