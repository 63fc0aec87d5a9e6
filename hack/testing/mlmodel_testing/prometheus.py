"""A real Prometheus for the e2e tests: the pinned server (``.venv/bin/prometheus``, ``make install``) on this
host, finding the cluster's pods through Kubernetes service discovery and scraping those annotated
``prometheus.io/scrape`` (the operator, the servers, the routers), as the chart's README tells a Prometheus
without the Prometheus Operator to; and the queries of the chart's Grafana dashboard.

Pod IPs are reached directly: on the local provider the host is the node; on kind the harness routes the pod
CIDR to the node.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from mlmodel_testing.cluster import REPO, Cluster, free_port

PROMETHEUS = REPO / ".venv" / "bin" / "prometheus"
DASHBOARD = REPO / "charts" / "mlmodel" / "files" / "dashboard.json"
ROLLOUT_ROW = "Rollout (spec.rollout): the operator's numbers"  # the dashboard's row of a rollout's panels


def scrape_config(kubeconfig: Path) -> dict[str, Any]:
    """The job a Prometheus without the Prometheus Operator needs (see the chart's README)."""
    return {
        "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
        "rule_files": ["rules.yaml"],
        "scrape_configs": [
            {
                "job_name": "kubernetes-pods",
                # The operator's series carry the ModelDeployment's namespace: it wins over the pod's.
                "honor_labels": True,
                "kubernetes_sd_configs": [{"role": "pod", "kubeconfig_file": str(kubeconfig)}],
                "relabel_configs": [
                    {
                        "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
                        "regex": "true",
                        "action": "keep",
                    },
                    {
                        "source_labels": ["__address__", "__meta_kubernetes_pod_annotation_prometheus_io_port"],
                        "regex": r"([^:]+)(?::\d+)?;(\d+)",
                        "replacement": "$1:$2",
                        "target_label": "__address__",
                    },
                    {
                        "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_path"],
                        "regex": "(.+)",
                        "target_label": "__metrics_path__",
                    },
                    {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                    {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                    {
                        "source_labels": [
                            "__meta_kubernetes_pod_label_app_kubernetes_io_name",
                            "__meta_kubernetes_pod_label_app_kubernetes_io_instance",
                        ],
                        "regex": "mlmodel-server;(.+)",
                        "target_label": "model",
                    },
                ],
            }
        ],
    }


@contextlib.contextmanager
def serve(cluster: Cluster, workdir: Path, rules: dict[str, Any] | None = None) -> Iterator[str]:
    """Prometheus scraping ``cluster`` (with the rules file ``rules``, if any) until the block ends: its base URL.
    Its log's last lines are printed at the end."""
    if not PROMETHEUS.exists():
        raise AssertionError(f"{PROMETHEUS} is missing: run `make install`")
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(scrape_config(cluster.kubeconfig)))
    (workdir / "rules.yaml").write_text(yaml.safe_dump(rules or {"groups": []}))
    port = free_port()
    log = (workdir / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            str(PROMETHEUS),
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        cluster.wait_until("Prometheus to be ready", lambda: get(f"{base}/-/ready"), 60)
        yield base
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
        print(f"\n===== prometheus log (last lines) =====\n{(workdir / 'prometheus.log').read_text()[-4000:]}")


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return str(reply.read().decode())


def query(base: str, expr: str) -> list[dict[str, Any]]:
    """The instant vector ``expr`` returns now (an error is a failure, not an empty result)."""
    reply = json.loads(get(f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"))
    assert reply["status"] == "success", reply
    return reply["data"]["result"]  # type: ignore[no-any-return]


def dashboard_queries(namespace: str, rollout: bool = False) -> dict[str, str]:
    """The queries of the dashboard, with its variables filled in: those of its rollout row (``rollout``), or
    all the others and its variables."""
    board = json.loads(DASHBOARD.read_text())
    out = {}
    row = ""
    for panel in board["panels"]:
        row = panel["title"] if panel["type"] == "row" else row
        for target in panel.get("targets", []):
            if (row == ROLLOUT_ROW) == rollout:
                out[f"{panel['title']} {target['refId']}"] = target["expr"]
    for variable in board["templating"]["list"] if not rollout else []:
        if variable["type"] == "query":
            found = re.fullmatch(r"label_values\((.*), (\w+)\)", variable["query"]["query"])
            assert found, variable
            out[f"variable {variable['name']}"] = f"count by ({found.group(2)}) ({found.group(1)})"
    fill = {"$namespace": namespace, "$model": "iris", "$__rate_interval": "1m"}
    for name, expr in out.items():
        for var, value in fill.items():
            expr = expr.replace(var, value)
        out[name] = expr
    return out
