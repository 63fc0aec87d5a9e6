"""The benchmark's harness: the contenders (the tutorial Flask app and our server) started one at a time on the
same model, pinned to a CPU, driven by wrk pinned to another, and the results judged against the issue's targets.

Everything it writes (models, server logs, raw wrk output) goes under ``.bench/``. ``run.py`` is its command line;
``ceiling.py``, ``memory.py`` and ``v2_binary.py`` use its servers too.
"""

from __future__ import annotations

import importlib
import json
import os
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
from pathlib import Path
from typing import Any

from report import fmt_ms
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


def usable(point: Point | None) -> WrkResult | None:
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
    o, n = usable(ours), usable(naive)
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


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ---------------------------------------------------------------- the run


@dataclass(frozen=True)
class Settings:
    """What a run measures and how: the models, wrk's connection counts and durations, the CPUs, our server's
    extra arguments, and which app stands for ours (``naive``: the naive app, to develop the scripts)."""

    models: Sequence[str] = MODELS
    connections: Sequence[int] = (1, 16, 64)
    duration: float = 10.0
    warmup: float = 3.0
    bulk_rows: int = 1000
    server_args: Sequence[str] = ()
    server_cpu: str = "0"
    client_cpu: str = "1"
    ours: str = "server"


def preflight(settings: Settings) -> list[str]:
    """What this machine lacks for a run: wrk, taskset, our server, the CPUs."""
    problems = [
        f"{tool} not found on PATH (apt-get install -y {tool.replace('taskset', 'util-linux')})"
        for tool in ("wrk", "taskset")
        if not shutil.which(tool)
    ]
    if settings.ours == "server" and not (
        (VENV_BIN / "mlmodel-server").exists() or (REPO / "server" / "mlmodel_server" / "__main__.py").exists()
    ):
        problems.append("our server is missing (make install), or use --ours naive")
    cpus = os.sched_getaffinity(0)
    for flag in ("server_cpu", "client_cpu"):
        for part in str(getattr(settings, flag)).split(","):
            lo, _, hi = part.partition("-")
            if not lo.isdigit() or int(hi or lo) not in cpus:
                problems.append(f"--{flag.replace('_', '-')} {getattr(settings, flag)}: CPU not available")
    return problems


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so the ``finally`` blocks stop the servers."""

    def handler(signum: int, _frame: object) -> None:
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def measure_server(
    label: str,
    model: str,
    path: Path,
    sha256: str,
    settings: Settings,
    res: ModelResults,
    scripts: dict[str, Path],
) -> list[Any] | None:
    """Start one server, measure it at every connection count, stop it. Returns its sanity answer."""
    bulk_rows = settings.bulk_rows
    port = free_port()
    argv, ready_path = server_argv(
        label,
        model,
        path,
        sha256,
        port,
        settings.server_cpu,
        settings.server_args,
        settings.ours,
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
            for c in settings.connections:
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
                settings.warmup,
                cpu=settings.client_cpu,
            )
        except (WrkParseError, subprocess.TimeoutExpired) as err:
            print(f"  {label}: warm-up failed: {err}", flush=True)
        for c in settings.connections:
            point = Point()
            try:
                point.result, raw = run_wrk(url, scripts["one"], c, settings.duration, cpu=settings.client_cpu)
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
                run_wrk(url, scripts["bulk"], 1, min(settings.warmup, 2.0), cpu=settings.client_cpu)
                point.result, raw = run_wrk(url, scripts["bulk"], 1, settings.duration, cpu=settings.client_cpu)
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


def run(settings: Settings) -> tuple[list[ModelResults], bool]:
    """Every model of ``settings``, each served by the naive app then ours: the results, and whether any run
    failed (a server that did not start, a non-2xx answer or a socket error)."""
    print("Training example models into .bench/models ...", flush=True)
    models = train_models(WORK / "models")
    scripts_dir = WORK / "wrk"
    scripts_dir.mkdir(parents=True, exist_ok=True)

    all_results: list[ModelResults] = []
    failed = False
    for model in settings.models:
        path, sha256 = models[model]
        print(f"\n== {model} ==", flush=True)
        scripts: dict[str, Path] = {}
        one_body = body_for(model_rows(model, 1))
        scripts["one_body"] = scripts_dir / f"{model}-1.json"
        scripts["one_body"].write_text(one_body)
        scripts["one"] = scripts_dir / f"{model}-1.lua"
        scripts["one"].write_text(lua_post_script(one_body))
        if model == BULK_MODEL:
            bulk_body = body_for(model_rows(model, settings.bulk_rows))
            scripts["bulk_body"] = scripts_dir / f"{model}-{settings.bulk_rows}.json"
            scripts["bulk_body"].write_text(bulk_body)
            scripts["bulk"] = scripts_dir / f"{model}-{settings.bulk_rows}.lua"
            scripts["bulk"].write_text(lua_post_script(bulk_body))
            print(f"  {settings.bulk_rows}-row body: {len(bulk_body):,} bytes", flush=True)
        res = ModelResults(model)
        answers = {label: measure_server(label, model, path, sha256, settings, res, scripts) for label in LABELS}
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
    return all_results, failed
