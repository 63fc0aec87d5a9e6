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

The harness (the contenders, wrk, the targets) is ``bench/harness.py``; this is its command line.

Exit status: 0 when every server started and every response was 2xx, 1
otherwise (2 with ``--strict`` when only targets were missed). Everything it
writes (models, server logs, raw wrk output) goes under ``.bench/``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import fields
from importlib.metadata import version
from pathlib import Path

from harness import (
    LABELS,
    MODEL_KIND,
    MODELS,
    REPO,
    ModelResults,
    Settings,
    Target,
    evaluate_targets,
    exit_on_sigterm,
    load_average,
    preflight,
    run,
    usable,
)
from report import fmt_ms, fmt_rate, markdown_table


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
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        parser.error(f"unknown models: {', '.join(unknown)}")
    try:
        args.connections = [int(c) for c in args.connections.split(",") if c.strip()]
    except ValueError:
        parser.error("--connections takes comma-separated integers")
    if not args.connections or min(args.connections) < 1:
        parser.error("--connections needs positive integers")
    if args.duration < 1 or args.warmup < 1:
        parser.error("--duration and --warmup must be at least 1 second")
    args.server_args = shlex.split(args.server_args)
    return args


def settings_from(args: argparse.Namespace) -> Settings:
    """The harness's settings from the parsed command line (``parse_args`` names them as ``Settings`` does)."""
    return Settings(**{f.name: getattr(args, f.name) for f in fields(Settings)})


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
        n, o = usable(naive), usable(ours)
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
            r = usable(point)
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


def environment_lines(settings: Settings, load_before: str, load_after: str) -> list[str]:
    """The machine, the commit and the settings a report was measured with."""

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
    ours = f"`--workers 1 {' '.join(settings.server_args)}`".replace(" `", "`")
    if settings.ours != "server":
        ours = "DEV MODE, the naive app stands in for ours"
    return [
        f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}; commit {commit}{dirty}",
        (
            f"- machine: {cpu}, {os.cpu_count()} CPUs; Python {platform.python_version()},"
            f" scikit-learn {version('scikit-learn')}"
        ),
        (
            f"- servers pinned to CPU {settings.server_cpu}, wrk (1 thread) pinned to CPU"
            f" {settings.client_cpu}, loopback only; {wrk_version[0] if wrk_version else 'wrk'}"
        ),
        f"- {settings.duration:g} s per point after a {settings.warmup:g} s warm-up; our server: {ours}",
        f"- load average before: {load_before}; after: {load_after}",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_from(args)
    exit_on_sigterm()
    problems = preflight(settings)
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
    if settings.ours == "naive":
        print(
            "WARNING: --ours naive: both sides are the naive app (development mode).",
            flush=True,
        )

    all_results, failed = run(settings)
    load_after = load_average()
    sections = ["## Results", "", *environment_lines(settings, load_before, load_after), ""]
    all_targets: list[Target] = []
    for res in all_results:
        targets = evaluate_targets(res, settings.bulk_rows)
        all_targets += targets
        sections += [
            model_section(res, settings.connections, settings.bulk_rows, targets),
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
