"""Run wrk and parse its text output (shared by ``bench/run.py`` and its tests)."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

# wrk prints durations with these units (see format_time_us / format_time_s in wrk's units.c).
_TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_TIME = r"([0-9]+(?:\.[0-9]+)?)(us|ms|s|m|h)"


class WrkParseError(ValueError):
    """wrk's output did not look like a finished run."""


@dataclass(frozen=True)
class WrkResult:
    """The numbers bench/run.py needs from one wrk run."""

    requests: int
    duration_ms: float
    requests_per_sec: float
    latency_ms: dict[int, float]
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)

    @property
    def p50_ms(self) -> float:
        return self.latency_ms[50]

    @property
    def p99_ms(self) -> float:
        return self.latency_ms[99]

    @property
    def socket_error_total(self) -> int:
        return sum(self.socket_errors.values())

    @property
    def ok(self) -> bool:
        """Every response was 2xx/3xx and no socket failed."""
        return self.non_2xx == 0 and self.socket_error_total == 0 and self.requests > 0

    def problems(self) -> str:
        """Human-readable list of what went wrong, or ``""``."""
        parts = []
        if self.requests == 0:
            parts.append("no requests completed")
        if self.non_2xx:
            parts.append(f"{self.non_2xx} non-2xx")
        for kind, count in self.socket_errors.items():
            if count:
                parts.append(f"{count} socket {kind} errors")
        return ", ".join(parts)


def _to_ms(value: str, unit: str) -> float:
    return float(value) * _TIME_UNITS_MS[unit]


def parse_wrk_output(text: str) -> WrkResult:
    """Parse the stdout of ``wrk --latency``.

    Raises ``WrkParseError`` if a field the benchmark relies on is missing.
    """
    latency: dict[int, float] = {}
    for match in re.finditer(rf"^\s+(50|75|90|99)(?:\.0+)?%\s+{_TIME}\s*$", text, re.MULTILINE):
        latency[int(match.group(1))] = _to_ms(match.group(2), match.group(3))
    if 50 not in latency or 99 not in latency:
        raise WrkParseError("no latency distribution (was wrk run with --latency?)")

    done = re.search(rf"^\s*([0-9]+) requests in {_TIME}", text, re.MULTILINE)
    if not done:
        raise WrkParseError("no 'N requests in T' line")
    rps = re.search(r"^Requests/sec:\s+([0-9]+(?:\.[0-9]+)?)", text, re.MULTILINE)
    if not rps:
        raise WrkParseError("no 'Requests/sec:' line")

    non_2xx = re.search(r"^\s*Non-2xx or 3xx responses:\s+([0-9]+)", text, re.MULTILINE)
    socket_errors: dict[str, int] = {}
    sock = re.search(r"^\s*Socket errors:(.*)$", text, re.MULTILINE)
    if sock:
        for kind, count in re.findall(r"([a-z]+) ([0-9]+)", sock.group(1)):
            socket_errors[kind] = int(count)

    return WrkResult(
        requests=int(done.group(1)),
        duration_ms=_to_ms(done.group(2), done.group(3)),
        requests_per_sec=float(rps.group(1)),
        latency_ms=latency,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=socket_errors,
    )


def lua_post_script(body: str) -> str:
    """A wrk script that POSTs ``body`` as JSON on every request."""
    delim = "="
    while f"]{delim}]" in body:
        delim += "="
    return (
        f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = [{delim}[{body}]{delim}]\n'
    )


def run_wrk(
    url: str,
    script: Path,
    connections: int,
    duration_s: float,
    *,
    cpu: str | None = "1",
    timeout_s: float = 10.0,
) -> tuple[WrkResult, str]:
    """Run one bounded wrk load (one thread, ``connections`` connections); return result and raw output."""
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={max(1, round(timeout_s))}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    if cpu is not None:
        cmd = ["taskset", "-c", cpu, *cmd]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=duration_s + timeout_s + 30,
        check=False,
    )
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise WrkParseError(f"wrk exited {proc.returncode}: {output.strip()[-500:]}")
    return parse_wrk_output(proc.stdout), output
