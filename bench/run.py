"""Benchmark our model server against the tutorial Flask app, on one core each.

For every example model, starts the naive app (``bench/naive_app.py``) and then
our server (``mlmodel-server``) on the same model, one at a time, each pinned to
CPU 0 with ``taskset``; drives each with wrk pinned to CPU 1 at 1, 16 and 64
connections; prints req/s, p50 and p99 side by side with the ratio ours/naive,
and the targets with PASS/MISS computed from the measured numbers.

    .venv/bin/python bench/run.py                  # full run, ~10 s per point
    .venv/bin/python bench/run.py --quick          # smoke run, ~1 minute
    .venv/bin/python bench/run.py --models iris --connections 16 \\
        --server-args='--threads 32' --markdown .bench/results.md

Exit status: 0 when every server started and every response was 2xx, 1
otherwise (2 with ``--strict`` when only targets were missed). Everything it
writes (models, server logs, raw wrk output) goes under ``.bench/``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from wrk_output import WrkParseError, WrkResult, lua_post_script, run_wrk

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
WORK = REPO / ".bench"
MODELS = ("iris", "hgb", "logreg")
MODEL_KIND = {
    "iris": "RandomForestClassifier, 100 trees, depth 3, 4 features",
    "hgb": "HistGradientBoostingClassifier, 30 features",
    "logreg": "LogisticRegression, 30 features",
}
IRIS_ROW = [5.1, 3.5, 1.4, 0.2]

# The targets from the issue. Ratios and p99 are read at TARGET_CONNECTIONS.
TARGET_CONNECTIONS = 16
RATIO_TARGET = {"iris": 3.0, "hgb": 2.0, "logreg": 1.3}
P99_TARGET_MS = {"iris": 50.0, "hgb": 50.0, "logreg": 20.0}
BULK_MODEL = "logreg"
BULK_ROWS_PER_S_TARGET = 200_000.0

LABELS = ("naive", "ours")
READY_TIMEOUT_S = 90.0
ERROR_LINE = re.compile(r"Traceback|\"level\":\s*\"(?:error|critical)\"|\[(?:ERROR|CRITICAL)\]|WORKER TIMEOUT")


# ---------------------------------------------------------------- models and bodies


def train_models(out: Path) -> dict[str, tuple[Path, str]]:
    """Train the example models with the repo's script; return name -> (path, sha256)."""
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [
            str(VENV_BIN / "python"),
            str(REPO / "server" / "examples" / "train_models.py"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    models: dict[str, tuple[Path, str]] = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            info = json.loads(line)
            models[info["name"]] = (Path(info["path"]).resolve(), info["sha256"])
    return models


def model_rows(name: str, count: int) -> list[list[float]]:
    """``count`` realistic rows of the data ``name`` was trained on."""
    datasets = importlib.import_module("sklearn.datasets")
    if name == "iris":
        data = datasets.load_iris().data
    else:
        # Same call as server/examples/train_models.py.
        data, _ = datasets.make_classification(
            n_samples=5000, n_features=30, n_informative=10, n_classes=3, random_state=0
        )
    rows: list[list[float]] = data[:count].tolist()
    if name == "iris" and count == 1:
        rows = [IRIS_ROW]
    return rows


def body_for(rows: list[list[float]]) -> str:
    """The request body: rows under "features", which both servers accept."""
    return json.dumps({"features": rows})


# ---------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """One server process (and its children) in its own process group."""

    label: str
    argv: list[str]
    ready_path: str
    log_path: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    ready_after_s: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=REPO,
        )
        log.close()

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Poll the readiness URL until it answers 200; raise on exit or deadline."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        url = self.base_url + self.ready_path
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode} before ready")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        self.ready_after_s = time.monotonic() - self.started_at
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.label} not ready after {timeout_s:.0f}s")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM the process group, then SIGKILL it if it lingers."""
        if self.proc is None or (self.proc.returncode is not None and not _group_alive(self.proc.pid)):
            return
        for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                continue
            if not _group_alive(self.proc.pid):
                break
            time.sleep(0.2)  # workers may outlive the master by a moment

    def error_lines(self) -> list[str]:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if ERROR_LINE.search(line)]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def ours_command() -> list[str]:
    """How to start our server: the console script, else ``python -m`` from the source tree."""
    script = VENV_BIN / "mlmodel-server"
    if script.exists():
        return [str(script)]
    python = str(VENV_BIN / "python")
    return ["env", f"PYTHONPATH={REPO / 'server'}", python, "-m", "mlmodel_server"]


def server_argv(
    label: str,
    model: str,
    path: Path,
    sha256: str,
    port: int,
    server_cpu: str,
    server_args: Sequence[str],
    ours_impl: str,
) -> tuple[list[str], str]:
    """The command line and readiness path of ``label`` serving ``model``."""
    pin = ["taskset", "-c", server_cpu]
    if label == "naive" or ours_impl == "naive":
        return [
            *pin,
            str(VENV_BIN / "python"),
            str(REPO / "bench" / "naive_app.py"),
            "--model",
            str(path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ], "/health"
    return [*pin, *ours_argv(model, path, sha256, port, workers=1), *server_args], "/readyz"


def ours_argv(model: str, path: Path, sha256: str, port: int, *, workers: int) -> list[str]:
    """Our server on loopback, serving ``path`` pinned to its digest."""
    return [
        *ours_command(),
        "--model-uri",
        path.as_uri(),
        "--model-sha256",
        sha256,
        "--model-name",
        model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]


def post_json(url: str, body: str, timeout_s: float = 30.0) -> dict[str, Any]:
    req = urllib.request.Request(
        url,
        data=body.encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        result: dict[str, Any] = json.loads(resp.read())
        return result


def check_answer(answer: dict[str, Any], rows: int) -> str:
    """Return a problem description, or "" if the answer has ``rows`` predictions and probabilities."""
    preds, probs = answer.get("predictions"), answer.get("probabilities")
    if not isinstance(preds, list) or len(preds) != rows:
        return f"expected {rows} predictions, got {str(preds)[:80]}"
    if not isinstance(probs, list) or len(probs) != rows:
        return f"expected {rows} probability rows, got {str(probs)[:80]}"
    return ""


# ---------------------------------------------------------------- results


@dataclass
class Point:
    """One wrk run, or why there is none."""

    result: WrkResult | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.result is not None and self.result.ok and not self.error

    def problem(self) -> str:
        if self.error:
            return self.error
        if self.result is None:
            return "not run"
        return self.result.problems()


@dataclass
class ModelResults:
    model: str
    points: dict[str, dict[int, Point]] = field(default_factory=lambda: {lb: {} for lb in LABELS})
    bulk: dict[str, Point] = field(default_factory=dict)
    ready_s: dict[str, float | None] = field(default_factory=dict)
    start_errors: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Target:
    model: str
    what: str
    goal: str
    measured: str
    passed: bool | None  # None: not measured

    @property
    def mark(self) -> str:
        return "n/a" if self.passed is None else ("PASS" if self.passed else "MISS")


def _usable(point: Point | None) -> WrkResult | None:
    return point.result if point is not None and point.ok else None


def _judge(
    model: str,
    what: str,
    goal: str,
    ours: Point | None,
    naive: Point | None,
    need_naive: bool,
    measure: Any,
) -> Target:
    """One target. A failed run of ours is a MISS; a missing run (or a failed baseline) is n/a.

    ``measure(ours, naive)`` returns (measured text, passed) from usable results.
    """
    if ours is not None and not ours.ok:
        return Target(model, what, goal, f"ours failed: {ours.problem()}", False)
    o, n = _usable(ours), _usable(naive)
    if o is None or (need_naive and n is None):
        why = "baseline failed" if naive is not None and n is None else "not measured"
        return Target(model, what, goal, why, None)
    text, passed = measure(o, n)
    return Target(model, what, goal, text, bool(passed))


def evaluate_targets(res: ModelResults, bulk_rows: int) -> list[Target]:
    """The issue's targets for one model, judged from the measured numbers only."""
    out: list[Target] = []
    model, c = res.model, TARGET_CONNECTIONS
    naive_c, ours_c = res.points["naive"].get(c), res.points["ours"].get(c)
    if model in RATIO_TARGET:
        ratio_goal = RATIO_TARGET[model]

        def ratio(o: WrkResult, n: WrkResult) -> tuple[str, bool]:
            value = o.requests_per_sec / n.requests_per_sec if n.requests_per_sec else 0.0
            return f"{value:.2f}x", value >= ratio_goal

        what = f"req/s ours/naive @{c} conns"
        out.append(_judge(model, what, f">= {ratio_goal:g}x", ours_c, naive_c, True, ratio))
    if model in P99_TARGET_MS:
        p99_goal = P99_TARGET_MS[model]

        def p99(o: WrkResult, _n: WrkResult | None) -> tuple[str, bool]:
            return fmt_ms(o.p99_ms), o.p99_ms < p99_goal

        what = f"ours p99 @{c} conns"
        out.append(_judge(model, what, f"< {p99_goal:g} ms", ours_c, naive_c, False, p99))

    def p50(o: WrkResult, n: WrkResult) -> tuple[str, bool]:
        return f"{fmt_ms(o.p50_ms)} vs {fmt_ms(n.p50_ms)}", o.p50_ms <= n.p50_ms

    out.append(
        _judge(
            model,
            "p50 @1 conn: ours <= naive",
            "<= naive",
            res.points["ours"].get(1),
            res.points["naive"].get(1),
            True,
            p50,
        )
    )
    if model == BULK_MODEL:

        def rows(o: WrkResult, _n: WrkResult | None) -> tuple[str, bool]:
            value = o.requests_per_sec * bulk_rows
            return f"{value:,.0f}", value >= BULK_ROWS_PER_S_TARGET

        goal = f">= {BULK_ROWS_PER_S_TARGET:,.0f}"
        what = f"{bulk_rows}-row request, rows/s"
        out.append(
            _judge(
                model,
                what,
                goal,
                res.bulk.get("ours"),
                res.bulk.get("naive"),
                False,
                rows,
            )
        )
    return out


# ---------------------------------------------------------------- formatting


def fmt_ms(value: float) -> str:
    return f"{value:.2f} ms" if value < 100 else f"{value:.0f} ms"


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """A Markdown table, padded to line up in a terminal; the first ``left`` columns align left."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    right = [i >= left for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        padded = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)]
        return "| " + " | ".join(padded) + " |"

    sep = (
        "|"
        + "|".join(("-" * (w + 1) + ":") if r else ("-" * (w + 2)) for w, r in zip(widths, right, strict=True))
        + "|"
    )
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def model_section(res: ModelResults, connections: Sequence[int], bulk_rows: int, targets: list[Target]) -> str:
    parts = [
        f"### {res.model} ({MODEL_KIND.get(res.model, '')}; 1 row per request)",
        "",
    ]
    for label, err in res.start_errors.items():
        parts.append(f"**{label} failed to start:** {err}")
        parts.append("")
    rows = []
    failures = []
    for c in connections:
        naive, ours = res.points["naive"].get(c), res.points["ours"].get(c)
        n, o = _usable(naive), _usable(ours)
        ratio = f"{o.requests_per_sec / n.requests_per_sec:.2f}x" if n and o and n.requests_per_sec else "-"
        rows.append(
            [
                str(c),
                fmt_rate(n.requests_per_sec) if n else "FAILED",
                fmt_rate(o.requests_per_sec) if o else "FAILED",
                ratio,
                fmt_ms(n.p50_ms) if n else "-",
                fmt_ms(o.p50_ms) if o else "-",
                fmt_ms(n.p99_ms) if n else "-",
                fmt_ms(o.p99_ms) if o else "-",
            ]
        )
        for label, point in (("naive", naive), ("ours", ours)):
            if point is not None and not point.ok:
                failures.append(f"- {c} connections, {label}: {point.problem()}")
    parts.append(
        markdown_table(
            [
                "connections",
                "naive req/s",
                "ours req/s",
                "ratio",
                "naive p50",
                "ours p50",
                "naive p99",
                "ours p99",
            ],
            rows,
        )
    )
    if res.bulk:
        parts += ["", f"{bulk_rows}-row request, 1 connection:", ""]
        brows = []
        for label in LABELS:
            point = res.bulk.get(label)
            r = _usable(point)
            if r:
                brows.append(
                    [
                        label,
                        fmt_rate(r.requests_per_sec),
                        f"{r.requests_per_sec * bulk_rows:,.0f}",
                        fmt_ms(r.p50_ms),
                        fmt_ms(r.p99_ms),
                    ]
                )
            else:
                brows.append([label, "FAILED", "-", "-", "-"])
                if point is not None:
                    failures.append(f"- {bulk_rows}-row request, {label}: {point.problem()}")
        parts.append(markdown_table(["server", "req/s", "rows/s", "p50", "p99"], brows))
    if failures:
        parts += ["", "Failed runs:", *failures]
    ready = ", ".join(f"{lb} {v:.1f} s" for lb, v in res.ready_s.items() if v is not None)
    if ready:
        parts += ["", f"Start to ready: {ready}."]
    for note in res.notes:
        parts += ["", f"Note: {note}"]
    parts += [
        "",
        "Targets:",
        "",
        markdown_table(
            ["target", "goal", "measured", "result"],
            [[t.what, t.goal, t.measured, t.mark] for t in targets],
        ),
    ]
    return "\n".join(parts)


def environment_lines(args: argparse.Namespace, load_before: str, load_after: str) -> list[str]:
    def cmd(argv: list[str]) -> str:
        try:
            return subprocess.run(
                argv, check=False, capture_output=True, text=True, timeout=10, cwd=REPO
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"

    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = cmd(["git", "rev-parse", "--short", "HEAD"]) or "no commit"
    dirty = " (uncommitted changes)" if cmd(["git", "status", "--porcelain"]) else ""
    wrk_version = cmd(["wrk", "-v"]).split(" Copyright")[0:1] if shutil.which("wrk") else []
    ours = f"`--workers 1 {' '.join(args.server_args_list)}`".replace(" `", "`")
    if args.ours != "server":
        ours = "DEV MODE, the naive app stands in for ours"
    return [
        f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}; commit {commit}{dirty}",
        (
            f"- machine: {cpu}, {os.cpu_count()} CPUs; Python {platform.python_version()},"
            f" scikit-learn {version('scikit-learn')}"
        ),
        (
            f"- servers pinned to CPU {args.server_cpu}, wrk (1 thread) pinned to CPU"
            f" {args.client_cpu}, loopback only; {wrk_version[0] if wrk_version else 'wrk'}"
        ),
        f"- {args.duration:g} s per point after a {args.warmup:g} s warm-up; our server: {ours}",
        f"- load average before: {load_before}; after: {load_after}",
    ]


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ---------------------------------------------------------------- the run


def measure_server(
    label: str,
    model: str,
    path: Path,
    sha256: str,
    args: argparse.Namespace,
    res: ModelResults,
    scripts: dict[str, Path],
    bulk_rows: int,
) -> list[Any] | None:
    """Start one server, measure it at every connection count, stop it. Returns its sanity answer."""
    port = free_port()
    argv, ready_path = server_argv(
        label,
        model,
        path,
        sha256,
        port,
        args.server_cpu,
        args.server_args_list,
        args.ours,
    )
    server = Server(label, argv, ready_path, WORK / "logs" / f"{model}-{label}.log", port)
    url = server.base_url + "/predict"
    raw_dir = WORK / "wrk"
    raw_dir.mkdir(parents=True, exist_ok=True)
    answer: list[Any] | None = None
    print(f"  {label}: {shlex.join(argv)}", flush=True)
    try:
        server.start()
        try:
            server.wait_ready()
        except RuntimeError as err:
            tail = "\n".join(server.log_path.read_text(errors="replace").splitlines()[-15:])
            res.start_errors[label] = f"{err} (log {server.log_path})"
            for c in args.connection_list:
                res.points[label][c] = Point(error="server failed to start")
            if "bulk" in scripts:
                res.bulk[label] = Point(error="server failed to start")
            print(f"  {label}: FAILED TO START: {err}\n{tail}", flush=True)
            return None
        res.ready_s[label] = server.ready_after_s
        # One real request per body first: wrk only sees status codes.
        try:
            one = post_json(url, scripts["one_body"].read_text())
            problem = check_answer(one, 1)
            answer = [one.get("predictions"), one.get("probabilities")]
            if "bulk" in scripts and not problem:
                problem = check_answer(post_json(url, scripts["bulk_body"].read_text()), bulk_rows)
        except (urllib.error.URLError, OSError, ValueError) as err:
            problem = f"sanity request failed: {err}"
        if problem:
            res.notes.append(f"{label}: {problem}")
            print(f"  {label}: BAD ANSWER: {problem}", flush=True)
        try:
            run_wrk(
                url,
                scripts["one"],
                TARGET_CONNECTIONS,
                args.warmup,
                cpu=args.client_cpu,
            )
        except (WrkParseError, subprocess.TimeoutExpired) as err:
            print(f"  {label}: warm-up failed: {err}", flush=True)
        for c in args.connection_list:
            point = Point()
            try:
                point.result, raw = run_wrk(url, scripts["one"], c, args.duration, cpu=args.client_cpu)
                (raw_dir / f"{model}-{label}-c{c}.txt").write_text(raw)
            except (WrkParseError, subprocess.TimeoutExpired) as err:
                point.error = str(err)
            if problem and point.result is not None:
                point.error = problem
            res.points[label][c] = point
            r = point.result
            summary = f"{r.requests_per_sec:9.1f} req/s  p50 {fmt_ms(r.p50_ms)}  p99 {fmt_ms(r.p99_ms)}" if r else ""
            print(
                f"  {label:5s} c={c:<3d} {summary}  {'' if point.ok else 'FAILED: ' + point.problem()}",
                flush=True,
            )
        if "bulk" in scripts:
            point = Point()
            try:
                run_wrk(url, scripts["bulk"], 1, min(args.warmup, 2.0), cpu=args.client_cpu)
                point.result, raw = run_wrk(url, scripts["bulk"], 1, args.duration, cpu=args.client_cpu)
                (raw_dir / f"{model}-{label}-bulk{bulk_rows}.txt").write_text(raw)
            except (WrkParseError, subprocess.TimeoutExpired) as err:
                point.error = str(err)
            res.bulk[label] = point
            r = point.result
            summary = f"{r.requests_per_sec * bulk_rows:12,.0f} rows/s  p50 {fmt_ms(r.p50_ms)}" if r else ""
            print(
                f"  {label:5s} {bulk_rows} rows {summary}  {'' if point.ok else 'FAILED: ' + point.problem()}",
                flush=True,
            )
    finally:
        server.stop()
    errors = server.error_lines()
    if errors:
        res.notes.append(f"{label} log has {len(errors)} error lines ({server.log_path}), first: {errors[0][:200]}")
        print(
            f"  {label}: {len(errors)} error lines in {server.log_path}; first: {errors[0][:200]}",
            flush=True,
        )
    return answer


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]),
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=10.0,
        help="seconds per measured point (default 10)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=3.0,
        help="seconds of warm-up per server (default 3)",
    )
    parser.add_argument(
        "--models",
        default=",".join(MODELS),
        help="comma-separated subset of iris,hgb,logreg",
    )
    parser.add_argument("--connections", default="1,16,64", help="comma-separated wrk connection counts")
    parser.add_argument("--bulk-rows", type=int, default=1000, help="rows in the big logreg request")
    parser.add_argument("--markdown", type=Path, help="also write the tables as Markdown to this file")
    parser.add_argument(
        "--server-args",
        default="",
        help="extra arguments for our server, e.g. '--threads 32'",
    )
    parser.add_argument("--server-cpu", default="0", help="CPU list for the servers (taskset -c)")
    parser.add_argument("--client-cpu", default="1", help="CPU list for wrk (taskset -c)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s points, 1 s warm-up")
    parser.add_argument("--strict", action="store_true", help="exit 2 when a target is missed")
    parser.add_argument(
        "--ours",
        choices=["server", "naive"],
        default="server",
        help="'naive' runs the naive app in place of ours (to develop this script)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 2.0, 1.0
    args.model_list = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(args.model_list) - set(MODELS))
    if unknown:
        parser.error(f"unknown models: {', '.join(unknown)}")
    try:
        args.connection_list = [int(c) for c in args.connections.split(",") if c.strip()]
    except ValueError:
        parser.error("--connections takes comma-separated integers")
    if not args.connection_list or min(args.connection_list) < 1:
        parser.error("--connections needs positive integers")
    if args.duration < 1 or args.warmup < 1:
        parser.error("--duration and --warmup must be at least 1 second")
    args.server_args_list = shlex.split(args.server_args)
    return args


def preflight(args: argparse.Namespace) -> list[str]:
    problems = [
        f"{tool} not found on PATH (apt-get install -y {tool.replace('taskset', 'util-linux')})"
        for tool in ("wrk", "taskset")
        if not shutil.which(tool)
    ]
    if args.ours == "server" and not (
        (VENV_BIN / "mlmodel-server").exists() or (REPO / "server" / "mlmodel_server" / "__main__.py").exists()
    ):
        problems.append("our server is missing (make install), or use --ours naive")
    cpus = os.sched_getaffinity(0)
    for flag in ("server_cpu", "client_cpu"):
        for part in str(getattr(args, flag)).split(","):
            lo, _, hi = part.partition("-")
            if not lo.isdigit() or int(hi or lo) not in cpus:
                problems.append(f"--{flag.replace('_', '-')} {getattr(args, flag)}: CPU not available")
    return problems


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so the ``finally`` blocks stop the servers."""

    def handler(signum: int, _frame: object) -> None:
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    problems = preflight(args)
    if problems:
        for problem in problems:
            print(f"run.py: {problem}", file=sys.stderr)
        return 1
    load_before = load_average()
    if os.getloadavg()[0] > 1.5:
        print(
            f"WARNING: load average is {load_before}; numbers will be noisy.",
            flush=True,
        )
    if args.ours == "naive":
        print(
            "WARNING: --ours naive: both sides are the naive app (development mode).",
            flush=True,
        )

    print("Training example models into .bench/models ...", flush=True)
    models = train_models(WORK / "models")
    scripts_dir = WORK / "wrk"
    scripts_dir.mkdir(parents=True, exist_ok=True)

    all_results: list[ModelResults] = []
    failed = False
    for model in args.model_list:
        path, sha256 = models[model]
        print(f"\n== {model} ==", flush=True)
        scripts: dict[str, Path] = {}
        one_body = body_for(model_rows(model, 1))
        scripts["one_body"] = scripts_dir / f"{model}-1.json"
        scripts["one_body"].write_text(one_body)
        scripts["one"] = scripts_dir / f"{model}-1.lua"
        scripts["one"].write_text(lua_post_script(one_body))
        if model == BULK_MODEL:
            bulk_body = body_for(model_rows(model, args.bulk_rows))
            scripts["bulk_body"] = scripts_dir / f"{model}-{args.bulk_rows}.json"
            scripts["bulk_body"].write_text(bulk_body)
            scripts["bulk"] = scripts_dir / f"{model}-{args.bulk_rows}.lua"
            scripts["bulk"].write_text(lua_post_script(bulk_body))
            print(f"  {args.bulk_rows}-row body: {len(bulk_body):,} bytes", flush=True)
        res = ModelResults(model)
        answers = {
            label: measure_server(label, model, path, sha256, args, res, scripts, args.bulk_rows) for label in LABELS
        }
        naive_answer, ours_answer = answers["naive"], answers["ours"]
        if naive_answer and ours_answer and naive_answer[0] != ours_answer[0]:
            res.notes.append(f"predictions differ: naive {naive_answer[0]} vs ours {ours_answer[0]}")
        all_results.append(res)
        if (
            res.start_errors
            or any(not p.ok for pts in res.points.values() for p in pts.values())
            or any(not p.ok for p in res.bulk.values())
        ):
            failed = True

    load_after = load_average()
    sections = ["## Results", "", *environment_lines(args, load_before, load_after), ""]
    all_targets: list[Target] = []
    for res in all_results:
        targets = evaluate_targets(res, args.bulk_rows)
        all_targets += targets
        sections += [
            model_section(res, args.connection_list, args.bulk_rows, targets),
            "",
        ]
    passed = sum(t.passed is True for t in all_targets)
    missed = [t for t in all_targets if t.passed is False]
    unmeasured = sum(t.passed is None for t in all_targets)
    summary = f"**Targets: {passed} PASS, {len(missed)} MISS, {unmeasured} not measured.**"
    if missed:
        summary += " Missed: " + "; ".join(f"{t.model} {t.what} ({t.measured}, goal {t.goal})" for t in missed)
    sections.append(summary)
    if failed:
        sections.append("\n**Some runs FAILED (server did not start, or non-2xx/socket errors); see above.**")
    report = "\n".join(sections) + "\n"
    print("\n" + report, flush=True)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(report)
        print(f"Markdown written to {args.markdown}")
    if failed:
        return 1
    return 2 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
