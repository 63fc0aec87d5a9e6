"""Every routing spec the CRD accepts renders a configuration that the real nginx accepts (``nginx -t``):
random valid specs (hypothesis, 1,000 of them) through ``spec.parse`` and ``router_config``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlmodel_operator import spec
from mlmodel_operator.router import traffic

EXAMPLES = 1000
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
# DNS labels, among them words that mean something to nginx's map, split_clients or upstream blocks.
KEYWORDS = ["default", "include", "hostnames", "volatile", "server", "none", "hash", "keepalive", "a", "0"]
LABELS = st.one_of(st.sampled_from(KEYWORDS), st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")).filter(
    lambda name: name != "router"  # reserved by the CRD
)
QUANTITIES = st.one_of(
    st.integers(1024, 1 << 30),
    st.builds(lambda n, unit: f"{n}{unit}", st.integers(1, 1023), st.sampled_from(["Ki", "Mi"])),
)


@st.composite
def routed_specs(draw: st.DrawFn) -> tuple[dict[str, Any], list[str]]:
    """A spec the CRD accepts (its bounds, patterns and CEL rules), and the variants that are ready."""
    names = draw(st.lists(LABELS, min_size=1, max_size=10, unique=True))
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=len(names) - 1, max_size=len(names) - 1)))
    weights = [b - a for a, b in zip([0, *cuts], [*cuts, 100], strict=True)]
    variants = [
        {"name": n, "modelUri": f"file:///m/{n}.joblib", "weight": w} for n, w in zip(names, weights, strict=True)
    ]
    routing: dict[str, Any] = {"router": draw(st.sampled_from(["auto", "always"]))}
    if draw(st.booleans()):
        routing["stickyHeader"] = draw(st.from_regex(r"\A[A-Za-z0-9][-A-Za-z0-9]{0,63}\Z"))
    if draw(st.booleans()):
        routing["allowOverride"] = draw(st.booleans())
    if draw(st.booleans()):
        mirror: dict[str, Any] = {"variant": draw(st.sampled_from(names))}
        if draw(st.booleans()):
            mirror["percent"] = draw(st.integers(1, 100))
        if draw(st.booleans()):
            mirror["bufferSize"] = draw(st.sampled_from(["1", "1Ki", "4Mi", "64Mi", 4096]))
        routing["mirror"] = mirror
    if draw(st.booleans()):
        limit: dict[str, Any] = {"requestsPerSecond": draw(st.integers(1, 1_000_000))}
        if draw(st.booleans()):
            limit["burst"] = draw(st.integers(0, 1_000_000))
        routing["rateLimit"] = limit
    if draw(st.booleans()):
        routing["connectionsPerClient"] = draw(st.integers(1, 4096))
    body: dict[str, Any] = {"variants": variants, "routing": routing}
    if draw(st.booleans()):
        body["maxRequestSize"] = draw(QUANTITIES)
    ready = draw(st.lists(st.sampled_from(names), unique=True))
    return body, ready


def _check(conf_dir: Path, body: dict[str, Any], ready: list[str]) -> None:
    resource = {"metadata": {"name": "iris", "namespace": "ml"}, "spec": body}
    md = spec.parse(resource, default_image="mlmodel-server:0.1.0")
    upstreams = {name: f"10.96.0.{i + 10}" for i, name in enumerate(ready)}
    rendered = traffic.router_config(md, upstreams, str(conf_dir), str(conf_dir), str(conf_dir))
    for name, text in rendered.files.items():
        (conf_dir / name).write_text(text)
    check = subprocess.run(
        [NGINX, "-t", "-q", "-c", str(conf_dir / traffic.NGINX_CONF), "-e", "stderr"], capture_output=True, text=True
    )
    assert check.returncode == 0, (check.stderr, body, ready)


def test_every_valid_spec_renders_a_config_nginx_accepts(tmp_path: Path) -> None:
    @settings(
        max_examples=EXAMPLES, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(routed_specs())
    def rendered_and_checked(case: tuple[dict[str, Any], list[str]]) -> None:
        _check(tmp_path, *case)

    rendered_and_checked()
