"""Our server against the framework's ceiling: a bare Flask app under the same gunicorn.

For each model it starts, side by side, our server and ``bench/bare_app.py`` (parse the
JSON, answer a constant of the same shape) under gunicorn with the same workers and
threads (the threads our server chose for the model), and optionally the server from
another source tree (``--before-src``, e.g. ``git archive HEAD server | tar -x -C DIR``)
as "before". Each contender is driven by wrk at each connection count for ``--rounds``
short rounds, the contenders taking turns so that noise on the machine falls on all of
them; the medians are reported, with each server's share of the ceiling's req/s.

Modes: ``one-core`` (1 worker, every server pinned to CPU 0, wrk to CPU 1) and
``all-cores`` (the default workers, one per CPU, nothing pinned).

    .venv/bin/python bench/ceiling.py                           # both modes, writes bench/CEILING.md
    .venv/bin/python bench/ceiling.py --modes one-core --models logreg --duration 3 --rounds 1 --markdown ''
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import (
    REPO,
    VENV_BIN,
    WORK,
    Server,
    body_for,
    check_answer,
    free_port,
    load_average,
    model_rows,
    ours_argv,
    ours_command,
    post_json,
    train_models,
)
from report import fmt_ms, fmt_rate, markdown_table
from wrk_output import WrkParseError, WrkResult, lua_post_script, run_wrk

MODELS = ("logreg", "hgb", "iris")
CLASSES = {"logreg": 3, "hgb": 3, "iris": 3}
MODES = ("one-core", "all-cores")
CEILING = "ceiling"
SHARE_TARGET = 0.70
P50_GAP_MS = 0.25


@dataclass(frozen=True)
class Mode:
    name: str
    workers: int
    server_cpu: str | None  # None: not pinned
    wrk_cpu: str | None


def mode_for(name: str) -> Mode:
    if name == "one-core":
        return Mode(name, 1, "0", "1")
    return Mode(name, len(os.sched_getaffinity(0)), None, None)


@dataclass
class Numbers:
    """The medians over rounds of one contender at one connection count."""

    rps: float
    p50_ms: float
    p99_ms: float
    failed: str = ""


def _pin(cpu: str | None) -> list[str]:
    return [] if cpu is None else ["taskset", "-c", cpu]


def _threads_chosen(log: Path) -> int | None:
    """The request threads our server sized to the model, from its JSON log."""
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and "request threads sized" in line:
            return int(json.loads(line)["threads"])
    return None


def start(server: Server) -> str:
    """Start and wait for ``server``; return "" or why it failed."""
    server.start()
    try:
        server.wait_ready()
    except RuntimeError as err:
        server.stop()
        return str(err)
    return ""


def measure_model(
    model: str, path: Path, sha256: str, mode: Mode, args: argparse.Namespace
) -> dict[str, dict[int, Numbers]]:
    """Every contender on ``model`` at every connection count; contender -> conns -> numbers."""
    logs = WORK / "logs"
    one = body_for(model_rows(model, 1))
    script = WORK / "wrk" / f"ceiling-{model}.lua"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(lua_post_script(one))
    servers: dict[str, Server] = {}
    sources = {"ours": REPO / "server"}
    if args.before_src:
        sources["before"] = args.before_src.resolve()
    try:
        for label, src in sources.items():
            port = free_port()
            flags = ours_argv(model, path, sha256, port, workers=mode.workers)[len(ours_command()) :]
            argv = ["env", f"PYTHONPATH={src}", str(VENV_BIN / "python"), "-m", "mlmodel_server", *flags]
            servers[label] = Server(
                label, [*_pin(mode.server_cpu), *argv], "/readyz", logs / f"ceiling-{model}-{label}.log", port
            )
        for label, server in servers.items():
            if err := start(server):
                raise RuntimeError(f"{label}: {err}")
        threads = _threads_chosen(servers["ours"].log_path) or 16
        port = free_port()
        bare = [
            *_pin(mode.server_cpu),
            "env",
            f"BARE_CLASSES={CLASSES[model]}",
            str(VENV_BIN / "gunicorn"),
            "--chdir",
            str(REPO / "bench"),
            "-k",
            "gthread",
            "--threads",
            str(threads),
            "-w",
            str(mode.workers),
            "--keep-alive",
            "75",
            "--timeout",
            "120",
            "-b",
            f"127.0.0.1:{port}",
            "bare_app:app",
        ]
        servers[CEILING] = Server(CEILING, bare, "/readyz", logs / f"ceiling-{model}-bare.log", port)
        if err := start(servers[CEILING]):
            raise RuntimeError(f"{CEILING}: {err}")
        for label, server in servers.items():
            if label != CEILING and (problem := check_answer(post_json(server.base_url + "/predict", one), 1)):
                raise RuntimeError(f"{label}: {problem}")
        print(f"  {model}: {threads} threads per worker, {mode.workers} worker(s)", flush=True)
        order = [CEILING, *sources]
        for server in (servers[label] for label in order):
            run_wrk(server.base_url + "/predict", script, 16, args.warmup, cpu=mode.wrk_cpu)
        out: dict[str, dict[int, Numbers]] = {label: {} for label in order}
        for conns in args.connection_list:
            runs: dict[str, list[WrkResult | str]] = {label: [] for label in order}
            for _ in range(args.rounds):
                for label in order:
                    try:
                        result, _raw = run_wrk(
                            servers[label].base_url + "/predict", script, conns, args.duration, cpu=mode.wrk_cpu
                        )
                        runs[label].append(result if result.ok else result.problems())
                    except WrkParseError as err:
                        runs[label].append(str(err))
            for label in order:
                out[label][conns] = _median(runs[label])
        return out
    finally:
        for server in servers.values():
            server.stop()


def _median(runs: list[WrkResult | str]) -> Numbers:
    bad = [r for r in runs if isinstance(r, str)]
    good = [r for r in runs if not isinstance(r, str)]
    if bad or not good:
        return Numbers(0.0, 0.0, 0.0, failed="; ".join(bad) or "no run")
    return Numbers(
        statistics.median(r.requests_per_sec for r in good),
        statistics.median(r.p50_ms for r in good),
        statistics.median(r.p99_ms for r in good),
    )


def table(results: dict[str, dict[str, dict[int, Numbers]]], conns: Sequence[int]) -> str:
    rows = []
    for model, by_label in results.items():
        for c in conns:
            ceiling = by_label[CEILING][c]
            for label, points in by_label.items():
                n = points[c]
                if n.failed:
                    rows.append([model, str(c), label, "FAILED", "", "", ""])
                    continue
                share = "100%" if label == CEILING else (f"{n.rps / ceiling.rps:.0%}" if ceiling.rps else "n/a")
                rows.append(
                    [
                        model,
                        str(c),
                        label,
                        fmt_rate(n.rps),
                        share.replace("%", " %"),
                        fmt_ms(n.p50_ms),
                        fmt_ms(n.p99_ms),
                    ]
                )
    return markdown_table(["model", "conns", "server", "req/s", "of ceiling", "p50", "p99"], rows, left=3)


def targets(results: dict[str, dict[str, dict[int, Numbers]]]) -> list[str]:
    """The issue's targets, from the one-core numbers of this run: PASS, MISS or n/a."""
    lines = []

    def mark(ok: bool | None) -> str:
        return "n/a" if ok is None else ("PASS" if ok else "MISS")

    def get(model: str, label: str, c: int) -> Numbers | None:
        n = results.get(model, {}).get(label, {}).get(c)
        return None if n is None or n.failed else n

    ours16, ceil16, before16 = get("logreg", "ours", 16), get("logreg", CEILING, 16), get("logreg", "before", 16)
    if ours16 and ceil16:
        share = ours16.rps / ceil16.rps
        lines.append(
            f"- {mark(share >= SHARE_TARGET)} logreg @16: {share:.0%} of the ceiling (goal >= {SHARE_TARGET:.0%})"
        )
    if ours16 and before16:
        lines.append(
            f"- {mark(ours16.p99_ms <= before16.p99_ms)} logreg @16 p99: {fmt_ms(ours16.p99_ms)} "
            f"vs before {fmt_ms(before16.p99_ms)} (goal: no worse)"
        )
    ours1, ceil1 = get("logreg", "ours", 1), get("logreg", CEILING, 1)
    if ours1 and ceil1:
        gap = ours1.p50_ms - ceil1.p50_ms
        lines.append(
            f"- {mark(gap <= P50_GAP_MS)} logreg @1 p50: {gap:+.2f} ms vs the ceiling (goal <= {P50_GAP_MS} ms)"
        )
    for model in ("hgb", "iris"):
        ours, before = get(model, "ours", 16), get(model, "before", 16)
        if ours and before:
            ok = ours.rps >= before.rps and ours.p99_ms <= before.p99_ms
            lines.append(
                f"- {mark(ok)} {model} @16: {fmt_rate(ours.rps)} req/s, p99 {fmt_ms(ours.p99_ms)} vs before "
                f"{fmt_rate(before.rps)} req/s, p99 {fmt_ms(before.p99_ms)} (goal: req/s no lower, p99 no worse)"
            )
    return lines


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--connections", default="1,16")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    p.add_argument("--rounds", type=int, default=3, help="wrk runs per contender and point; medians reported")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--before-src", type=Path, default=None, help="a server/ tree to run as 'before'")
    p.add_argument("--markdown", default=str(REPO / "bench" / "CEILING.md"), help="'' to write none")
    args = p.parse_args(argv)
    args.model_list = [m for m in args.models.split(",") if m]
    args.mode_list = [m for m in args.modes.split(",") if m]
    args.connection_list = [int(c) for c in args.connections.split(",") if c]
    for m in args.model_list:
        if m not in MODELS:
            p.error(f"unknown model {m}")
    for m in args.mode_list:
        if m not in MODES:
            p.error(f"unknown mode {m}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = load_average()
    print(f"load average: {load_before}", flush=True)
    models = train_models(WORK / "models")
    sections = ["## Ceiling", ""]
    failed = False
    for mode_name in args.mode_list:
        mode = mode_for(mode_name)
        print(f"== {mode.name}: {mode.workers} worker(s) ==", flush=True)
        results: dict[str, dict[str, dict[int, Numbers]]] = {}
        for model in args.model_list:
            path, sha256 = models[model]
            try:
                results[model] = measure_model(model, path, sha256, mode, args)
            except (RuntimeError, OSError, WrkParseError) as err:
                print(f"  {model}: FAILED: {err}", flush=True)
                failed = True
        failed = failed or any(n.failed for r in results.values() for pts in r.values() for n in pts.values())
        pin = "servers pinned to CPU 0, wrk to CPU 1" if mode.server_cpu else "nothing pinned"
        sections += [
            f"### {mode.name}: {mode.workers} worker(s), gthread, {pin}",
            "",
            table(results, args.connection_list),
            "",
        ]
        if mode.name == "one-core":
            sections += ["Targets (one core):", "", *targets(results), ""]
    sections.insert(
        2,
        f"{args.rounds} rounds of {args.duration:g} s per point, medians; load average before: {load_before}; "
        f"after: {load_average()}\n",
    )
    report = "\n".join(sections)
    print("\n" + report, flush=True)
    if args.markdown:
        Path(args.markdown).write_text(report)
        print(f"written to {args.markdown}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
