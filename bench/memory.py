"""Memory of our server: model preloaded in the gunicorn master versus loaded per worker.

For each model, starts ``mlmodel-server --workers 4`` twice: with the model
preloaded in the master and shared copy-on-write with the workers (the
default), and with ``--no-preload`` (each worker loads its own copy). Times
start-to-ready, sends requests so every worker has served, then sums the PSS
(proportional set size, ``/proc/<pid>/smaps_rollup``) of the master and its
workers and lists the RSS of each process.

    .venv/bin/python bench/memory.py
    .venv/bin/python bench/memory.py --models hgb --workers 4 --requests 50 --markdown .bench/memory.md

PSS divides each shared page among the processes sharing it, so the sum over
the process tree is the memory the server really costs; RSS counts shared
pages once per process and overstates it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from harness import WORK, Server, body_for, exit_on_sigterm, free_port, model_rows, ours_argv, train_models
from report import markdown_table

MODES = ("preload", "no-preload")
READY_TIMEOUT_S = 120.0


@dataclass
class ProcMemory:
    pid: int
    role: str
    rss_kib: int
    pss_kib: int


@dataclass
class ModeResult:
    model: str
    mode: str
    ready_s: float | None = None
    all_loaded_s: float | None = None
    procs: list[ProcMemory] = field(default_factory=list)
    ok_requests: int = 0
    failed_requests: int = 0
    error: str = ""

    @property
    def pss_total_kib(self) -> int:
        return sum(p.pss_kib for p in self.procs)

    @property
    def rss_total_kib(self) -> int:
        return sum(p.rss_kib for p in self.procs)


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (all its threads' children)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return sorted(set(found))


def smaps_rollup(pid: int) -> tuple[int, int]:
    """(Rss, Pss) of ``pid`` in KiB."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss") and rest.strip().endswith("kB"):
            values[key] = int(rest.split()[0])
    return values["Rss"], values["Pss"]


def count_loaded(log: Path) -> int:
    """How many 'model loaded' lines the server has logged (master, or each worker)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return 0
    count = 0
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            msg = str(json.loads(line).get("msg", ""))
        except ValueError:
            continue
        if msg.startswith("model loaded"):
            count += 1
    return count


def post(url: str, body: bytes) -> int:
    req = urllib.request.Request(
        url,
        data=body,
        headers={"Content-Type": "application/json", "Connection": "close"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except OSError:
        return 0


def measure(model: str, path: Path, sha256: str, mode: str, args: argparse.Namespace) -> ModeResult:
    result = ModeResult(model, mode)
    port = free_port()
    argv = [
        *ours_argv(model, path, sha256, port, workers=args.workers),
        *(["--no-preload"] if mode == "no-preload" else []),
        *shlex.split(args.server_args),
    ]
    server = Server(mode, argv, "/readyz", WORK / "logs" / f"memory-{model}-{mode}.log", port)
    print(f"  {mode}: {shlex.join(argv)}", flush=True)
    try:
        server.start()
        try:
            server.wait_ready(READY_TIMEOUT_S)
        except RuntimeError as err:
            result.error = f"{err} (log {server.log_path})"
            tail = server.log_path.read_text(errors="replace").splitlines()[-10:]
            print("\n".join(f"    | {line}" for line in tail), flush=True)
            return result
        result.ready_s = server.ready_after_s
        # Every worker has the model: one 'model loaded' line from the master when
        # preloading, one per worker otherwise.
        # gunicorn forks its workers one by one, so also wait for all of them.
        assert server.proc is not None
        master = server.proc.pid
        expected = 1 if mode == "preload" else args.workers

        def all_loaded() -> bool:
            return len(children(master)) >= args.workers and count_loaded(server.log_path) >= expected

        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all_loaded() and time.monotonic() < deadline:
            time.sleep(0.02)
        if all_loaded():
            result.all_loaded_s = time.monotonic() - server.started_at
        # Fresh connections from several threads, so the requests spread over the workers.
        body = body_for(model_rows(model, 1)).encode()
        url = server.base_url + "/predict"
        with ThreadPoolExecutor(max_workers=2 * args.workers) as pool:
            statuses = list(pool.map(lambda _: post(url, body), range(args.requests)))
        result.ok_requests = sum(200 <= s < 300 for s in statuses)
        result.failed_requests = len(statuses) - result.ok_requests
        workers = children(master)
        for pid, role in [(master, "master"), *((w, "worker") for w in workers)]:
            try:
                rss, pss = smaps_rollup(pid)
            except (OSError, KeyError):
                continue
            result.procs.append(ProcMemory(pid, role, rss, pss))
        if len(workers) != args.workers:
            result.error = f"expected {args.workers} workers, found {len(workers)}"
    finally:
        server.stop()
    return result


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def report(results: list[ModeResult], workers: int) -> str:
    rows = []
    for r in results:
        master = [p for p in r.procs if p.role == "master"]
        worker_rss = [p.rss_kib for p in r.procs if p.role == "worker"]
        rows.append(
            [
                r.model,
                r.mode,
                seconds(r.ready_s),
                seconds(r.all_loaded_s),
                mib(master[0].rss_kib) if master else "-",
                ", ".join(f"{x / 1024:.0f}" for x in worker_rss) + " MiB" if worker_rss else "-",
                mib(r.rss_total_kib) if r.procs else "-",
                mib(r.pss_total_kib) if r.procs else "-",
                f"{r.ok_requests}/{r.ok_requests + r.failed_requests}",
            ]
        )
    lines = [
        f"## Memory: {workers} workers, model preloaded in the master vs loaded per worker",
        "",
        markdown_table(
            [
                "model",
                "mode",
                "first ready",
                "all workers loaded",
                "master RSS",
                "worker RSS",
                "RSS sum",
                "PSS sum",
                "2xx",
            ],
            rows,
            left=2,
        ),
        "",
    ]
    by_model: dict[str, dict[str, ModeResult]] = {}
    for r in results:
        by_model.setdefault(r.model, {})[r.mode] = r
    for model, modes in by_model.items():
        pre, per = modes.get("preload"), modes.get("no-preload")
        if pre and per and pre.procs and per.procs and pre.pss_total_kib:
            ratio = per.pss_total_kib / pre.pss_total_kib
            saved = per.pss_total_kib - pre.pss_total_kib
            lines.append(f"- {model}: per-worker loading uses {ratio:.2f}x the PSS of preloading ({mib(saved)} more).")
    for r in results:
        if r.error:
            lines.append(f"- **{r.model} {r.mode}: {r.error}**")
        if r.failed_requests:
            lines.append(f"- **{r.model} {r.mode}: {r.failed_requests} requests were not 2xx**")
    lines += [
        "",
        (
            "first ready: process start to the first 200 from /readyz. all workers loaded: "
            "process start until every worker process exists and the log shows the model "
            "loaded (once in the master when preloading, once per worker otherwise)."
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="hgb,iris", help="comma-separated models (default hgb,iris)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers (default 4)")
    parser.add_argument("--requests", type=int, default=50, help="requests sent before measuring")
    parser.add_argument("--server-args", default="", help="extra arguments for our server")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown here")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    if args.workers < 1 or args.requests < 1:
        parser.error("--workers and --requests must be at least 1")
    models = train_models(WORK / "models")
    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in models]
    if unknown:
        parser.error(f"unknown models: {', '.join(unknown)}")
    results: list[ModeResult] = []
    for model in wanted:
        path, sha256 = models[model]
        print(f"== {model} ==", flush=True)
        for mode in MODES:
            r = measure(model, path, sha256, mode, args)
            results.append(r)
            print(
                f"  {mode}: ready {seconds(r.ready_s)}, all loaded {seconds(r.all_loaded_s)}, "
                f"PSS {mib(r.pss_total_kib)}, {r.ok_requests} ok / {r.failed_requests} failed"
                + (f", ERROR {r.error}" if r.error else ""),
                flush=True,
            )
    text = report(results, args.workers)
    print("\n" + text)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
    failed = any(r.error or r.failed_requests or not r.procs for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
