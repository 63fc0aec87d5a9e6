"""How traffic is split across variants, and the router's nginx configuration. Pure: values in, text out.

The router is nginx with the Lua module (Debian's nginx and libnginx-mod-http-lua: ``Dockerfile.router``).
Native directives do what never changes while the router runs: ``limit_req`` rate-limits, the error bodies
are ``map``s. Everything a rollout moves is live instead: the routing document (``routing_document``) holds
each variant's weight and Service address and the mirror, and the router's Lua module (``router.lua``)
follows it without a reload: it long-polls the operator for it and re-reads the mounted weights ConfigMap,
and takes the newer (by serial). So a weight moved, a variant added or removed, a mirror switched on all
reach the running router pods within a second, and their pods (and a ``kubectl port-forward`` to one) stay.
The configuration changes only with the spec's router settings (limits, sticky header, override), and a new
one rolls the router's pods. The module picks a variant by hashing the request id (or the sticky header's
value) into contiguous buckets in spec order, so that when the weights move only the keys in the buckets
that moved change variant; a balancer sends the request to the variant's Service over a kept-alive
connection. It also counts requests and upstream latency per variant for Prometheus, and sends the mirror's
copies after the response, so that a slow shadow never holds up a client.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from importlib import resources

from mlmodel_operator import names
from mlmodel_operator.spec import ModelDeployment, Tolerance

LUA_MODULE = "mlmodel_router"
_LUA = f'require("{LUA_MODULE}")'
LUA = resources.files("mlmodel_operator.router").joinpath("router.lua").read_text()
_OBSERVE = f"log_by_lua_block {{ {_LUA}.observe() }}"
NGINX_CONF = "nginx.conf"
UPSTREAM = "mlmodel_variants"
# $mlmodel_variant when the override header names no variant it may pin, when it is sent and allowOverride is
# false, and when no variant can take a request: router.lua's choose() returns them (none is a DNS label, so
# none is ever a variant's name).
UNKNOWN, FORBIDDEN, NONE = '"?"', '"!"', '"-"'


@dataclass(frozen=True)
class Discovery:
    """How a router with no Kubernetes around (Docker Compose) finds its variants: their addresses are host names,
    resolved at request time by ``resolver`` (so a recreated container's new address is followed), on ``port``;
    and it probes each variant's ``path`` itself, routing only to those that answer 200 (no endpoints to tell)."""

    resolver: str
    port: int = names.SERVER_PORT
    path: str = "/readyz"


@dataclass(frozen=True)
class MirrorRoute:
    """The mirror as the routing document gives it: the variant that gets the copies, the share of requests
    copied, a router worker's budget of held bytes, whether its server compares, and its tolerance (``None``:
    the server's default)."""

    variant: str
    percent: int
    budget: int
    compare: bool = True
    tolerance: str | None = None


@dataclass(frozen=True)
class Routes:
    """What a router routes by, live: each variant's weight in percent and its address (``host:port`` of its
    Service; ``None``: not ready, no traffic), in spec order; and the mirror, if one is set."""

    weights: Mapping[str, int]
    addresses: Mapping[str, str | None]
    mirror: MirrorRoute | None = None


@dataclass(frozen=True)
class RouterConfig:
    """The files of the router's ConfigMap and their digest (which names the ConfigMap), and the routes in effect
    (not in the files: they go to the routing document)."""

    files: Mapping[str, str]
    digest: str
    routes: Routes

    @property
    def weights(self) -> Mapping[str, int]:
        return self.routes.weights


def routing_document(routes: Routes, serial: int) -> str:
    """What the router routes by: ``serial N`` (a router takes a document only if its serial is higher than
    the one it has), a ``variant percent address`` line a variant in spec order (address ``-``: none), and
    ``mirror variant percent budget compare|nocompare tolerance`` (tolerance ``-``: the server's) if one is set."""
    lines = [f"serial {serial}"]
    lines += [f"{name} {weight} {routes.addresses.get(name) or '-'}" for name, weight in routes.weights.items()]
    m = routes.mirror
    if m is not None:
        compare = "compare" if m.compare else "nocompare"
        lines.append(f"mirror {m.variant} {m.percent} {m.budget} {compare} {m.tolerance or '-'}")
    return "\n".join(lines) + "\n"


def parse_document(document: str) -> tuple[int, Routes] | None:
    """A routing document's serial and routes; ``None`` if it is not one."""
    lines = document.splitlines()
    head = lines[0].split() if lines else []
    if len(head) != 2 or head[0] != "serial" or not head[1].isdigit():
        return None
    found: dict[str, int] = {}
    addresses: dict[str, str | None] = {}
    mirror = None
    for line in lines[1:]:
        fields = line.split()
        try:
            if len(fields) == 6 and fields[0] == "mirror":
                tolerance = None if fields[5] == "-" else fields[5]
                mirror = MirrorRoute(fields[1], int(fields[2]), int(fields[3]), fields[4] == "compare", tolerance)
            elif len(fields) == 3:
                found[fields[0]] = int(fields[1])
                addresses[fields[0]] = None if fields[2] == "-" else fields[2]
            else:
                return None
        except ValueError:
            return None
    return int(head[1]), Routes(found, addresses, mirror)


def next_document(routes: Routes, live: str | None) -> tuple[int, str]:
    """The routing document to apply, and its serial: the live one while it holds ``routes``, else one with the
    next serial."""
    parsed = parse_document(live) if live is not None else None
    if (
        live is not None
        and parsed is not None
        and parsed[1] == Routes(dict(routes.weights), dict(routes.addresses), routes.mirror)
    ):
        return parsed[0], live
    serial = parsed[0] + 1 if parsed is not None else 1
    return serial, routing_document(routes, serial)


def applied_weights(md: ModelDeployment, ready: Collection[str]) -> dict[str, int]:
    """The weights in effect: a variant that is not ready gets none, its share goes to the ready ones in proportion.

    Integer percents that sum to 100 (largest remainder), or all zero when no ready variant has weight.
    """
    total = sum(v.weight for v in md.variants if v.name in ready)
    if total == 0:
        return {v.name: 0 for v in md.variants}
    exact = {v.name: (v.weight * 100 / total if v.name in ready else 0.0) for v in md.variants}
    out = {name: int(share) for name, share in exact.items()}
    by_remainder = sorted(exact, key=lambda n: (-(exact[n] - out[n]), [v.name for v in md.variants].index(n)))
    for name in by_remainder[: 100 - sum(out.values())]:
        out[name] += 1
    return out


def weights(applied: Mapping[str, int]) -> str:
    """``stable=90,canary=10``, for the printer column."""
    return ",".join(f"{name}={weight}" for name, weight in applied.items())


def routing_note(md: ModelDeployment, applied: Mapping[str, int], via_router: bool) -> str:
    """How traffic is routed, for ``status.routing``."""
    held = [
        f"{v.name} gets none of its weight {v.weight} (not ready)" for v in md.variants if v.weight > applied[v.name]
    ]
    how = "the router splits traffic" if via_router else "the entry Service sends traffic straight to the pods"
    return f"{how}: {weights(applied)}" + (f"; {'; '.join(held)}" if held else "")


def routes(md: ModelDeployment, upstreams: Mapping[str, str], port: int = names.SERVICE_PORT) -> Routes:
    """``md``'s routes, given the addresses of its ready variants' Services (on ``port``): a variant missing
    from ``upstreams`` is not ready, and gets no weight and no address."""
    addresses = {v.name: f"{_host(upstreams[v.name])}:{port}" if v.name in upstreams else None for v in md.variants}
    m = md.routing.mirror
    mirror = None
    if m is not None:
        tolerance = None
        if m.tolerance != Tolerance():
            tolerance = f"absolute={m.tolerance.absolute:g},relative={m.tolerance.relative:g}"
        mirror = MirrorRoute(m.variant, m.percent, m.buffer_bytes, m.compare, tolerance)
    return Routes(applied_weights(md, upstreams), addresses, mirror)


def router_config(
    md: ModelDeployment,
    upstreams: Mapping[str, str],
    config_dir: str = names.ROUTER_CONFIG_DIR,
    run_dir: str = "/tmp",
    weights_dir: str = names.ROUTER_WEIGHTS_DIR,
    source: tuple[str, int] | None = None,
    discovery: Discovery | None = None,
) -> RouterConfig:
    """The router's files for ``md``, and its routes given the ClusterIPs of the ready variants' Services (with
    ``discovery``: every variant's host name, readiness being the router's own).

    nginx reads its files from ``config_dir``, its routing document from ``weights_dir`` and from ``source``
    (the operator's weights endpoint, address and port; ``None``: the file only), and writes only to
    ``run_dir`` (the pod's root filesystem is read-only). The digest covers every file, so a new configuration
    is a new ConfigMap and a new pod template: the rollout is the reload. The routes are not in it: which
    variants there are, their weights, addresses and mirror all reach the running pods.
    """
    port = names.SERVICE_PORT if discovery is None else discovery.port
    body = _nginx(md, (config_dir, run_dir, weights_dir), source, discovery)
    digest = hashlib.sha256((body + LUA).encode()).hexdigest()
    conf = f"# config {digest[:16]}\n" + body.replace("@DIGEST@", digest[:16])
    return RouterConfig({NGINX_CONF: conf, f"{LUA_MODULE}.lua": LUA}, digest, routes(md, upstreams, port))


def _nginx(
    md: ModelDeployment,
    dirs: tuple[str, str, str],
    source: tuple[str, int] | None,
    discovery: Discovery | None,
) -> str:
    run_dir = dirs[1]
    lines = [
        f"# The router of ModelDeployment {md.namespace}/{md.name}, rendered by {names.FIELD_MANAGER}. Do not edit.",
        "# Debian's nginx loads the Lua module from modules-enabled.",
        "include /etc/nginx/modules-enabled/*.conf;",
        "worker_processes 1;  # one event loop per pod is thousands of requests per second: scale with replicas",
        f"pid {run_dir}/nginx.pid;",
        "error_log stderr notice;  # its notices too: each change of the routes and of the variants answering",
        "events { worker_connections 4096; }",
        "http {",
        *_http_settings(md, dirs, source, discovery),
        *_error_maps(md),
        *_upstream(discovery),
        *_rate_limit_zone(md),
        *_data_server(md, resolved=discovery is not None),
        "    server {",
        f"        listen {names.ROUTER_ADMIN_PORT};",
        "        access_log off;",
        f"        location = /ready {{ content_by_lua_block {{ {_LUA}.ready() }} }}",
        f"        location = /metrics {{ content_by_lua_block {{ {_LUA}.render() }} }}",
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _upstream(discovery: Discovery | None) -> list[str]:
    """Where requests go: in a cluster, one ``upstream`` whose balancer picks the chosen variant's Service, kept
    alive; with ``discovery``, ``$mlmodel_upstream`` (the variant's host), which nginx resolves at request time."""
    if discovery is not None:
        return []
    return [
        f"    upstream {UPSTREAM} {{",
        "        server 0.0.0.1:1;  # never used: the balancer sets the chosen variant's Service as the peer",
        f"        balancer_by_lua_block {{ {_LUA}.balance() }}",
        "        keepalive 64;  # per worker, over every variant's Service: each its own connections",
        "        keepalive_timeout 60s;",
        "    }",
    ]


def _http_settings(
    md: ModelDeployment,
    dirs: tuple[str, str, str],
    source: tuple[str, int] | None,
    discovery: Discovery | None,
) -> list[str]:
    config_dir, run_dir, weights_dir = dirs
    log = {
        "time": "$time_iso8601",
        "status": "$status",
        "variant": "$mlmodel_variant",
        "upstream_status": "$upstream_status",
        "upstream_latency": "$upstream_response_time",
        "request_time": "$request_time",
        "request_id": "$mlmodel_request_id",
        "method": "$request_method",
        "path": "$uri",
        "client": "$remote_addr",
        "config": "@DIGEST@",
    }
    settings: dict[str, object] = {"model": md.name, "config": "@DIGEST@", "override": md.routing.allow_override}
    follow: dict[str, object] = {"file": f"{weights_dir}/{names.ROUTER_WEIGHTS_FILE}"}
    if source is not None:
        path = f"{names.WEIGHTS_PATH}/{md.namespace}/{md.name}"
        follow["source"] = {"host": _host(source[0]), "port": source[1], "path": path}
    if discovery is not None:
        follow["probe"] = discovery.path
    return [
        "    server_tokens off;",
        "    default_type application/json;",
        f"    client_max_body_size {md.request_limit};  # spec.maxRequestSize, the servers' limit too",
        # A slow client is timed out here, and never reaches a server: nginx reads the whole request first.
        "    client_header_timeout 10s;",
        "    client_body_timeout 30s;  # between two reads",
        "    send_timeout 30s;",
        "    keepalive_timeout 75s;",
        "    limit_conn_zone $binary_remote_addr zone=mlmodel_conn:10m;",
        *(f"    {kind}_temp_path {run_dir}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")),
        *([f"    resolver {discovery.resolver} valid=2s ipv6=off;", "    resolver_timeout 2s;"] if discovery else []),
        f'    lua_package_path "{config_dir}/?.lua;;";',
        "    lua_shared_dict mlmodel_metrics 4m;",
        "    lua_socket_log_errors off;  # the weights poll logs its own failures, and none for a standby's refusal",
        f"    init_by_lua_block {{ {_LUA}.init({_lua_table(settings)}, {_lua_table(follow)}) }}",
        f"    init_worker_by_lua_block {{ {_LUA}.follow() }}",
        f"    log_format mlmodel escape=json {_quoted(log)};",
        "    access_log /dev/stdout mlmodel buffer=64k flush=1s;",
        '    map $http_x_request_id $mlmodel_request_id { "" $request_id; default $http_x_request_id; }',
        "    map $uri $mlmodel_protocol { ~^/v[12]/ open_inference; default predict; }",
    ]


def _rate_limit_zone(md: ModelDeployment) -> list[str]:
    limit = md.routing.rate_limit
    if limit is None:
        return []
    return [f"    limit_req_zone $binary_remote_addr zone=mlmodel_rate:10m rate={limit.requests_per_second}r/s;"]


def _data_server(md: ModelDeployment, resolved: bool) -> list[str]:
    """Port 8080, behind the entry Service: refuse what must be refused, then proxy to the chosen variant."""
    r = md.routing
    location = [
        *(
            [
                "            limit_req zone=mlmodel_rate"
                + (f" burst={r.rate_limit.burst} nodelay;" if r.rate_limit.burst else ";"),
                "            limit_req_status 429;",
            ]
            if r.rate_limit
            else []
        ),
        f"            limit_conn mlmodel_conn {r.connections_per_client};",
        "            limit_conn_status 429;",
        f"            if ($mlmodel_variant = {UNKNOWN}) {{ return 400 $mlmodel_unknown_variant; }}"
        if r.allow_override
        else f"            if ($mlmodel_variant = {FORBIDDEN}) {{ return 403 $mlmodel_override_forbidden; }}",
        f"            if ($mlmodel_variant = {NONE}) {{ return 503 $mlmodel_no_variant; }}",
        # The mirror's sample (and, if its server compares, the primary's answer) is kept for its copy.
        f"            access_by_lua_block {{ {_LUA}.capture() }}",
        f"            body_filter_by_lua_block {{ {_LUA}.keep() }}",
        "            proxy_pass http://$mlmodel_upstream;"
        if resolved
        else f"            proxy_pass http://{UPSTREAM};",
        f"            {_OBSERVE}",
    ]
    return [
        "    server {",
        f"        listen {names.ROUTER_PORT};",
        f"        add_header {names.HEADER_ROUTER_CONFIG} @DIGEST@ always;",
        f"        add_header {names.HEADER_ROUTER_WEIGHTS} $mlmodel_weights always;",
        # The variant: the one the override header pins, else the pick by weight (the sticky key's bucket, else
        # the request id's); or UNKNOWN, FORBIDDEN or NONE. Its address is kept for the balancer.
        f"        set_by_lua_block $mlmodel_variant {{ return {_LUA}.choose(ngx.var.http_x_model_variant, "
        f"{_sticky_key(md)}) }}",
        *([f"        set_by_lua_block $mlmodel_upstream {{ return {_LUA}.address() }}"] if resolved else []),
        f"        set_by_lua_block $mlmodel_weights {{ return {_LUA}.weights() }}",
        "        error_page 413 = @too_large;",
        "        error_page 429 = @rate_limited;",
        "        error_page 502 504 = @upstream_failed;",
        *_proxy("        "),
        "        location / {",
        *location,
        "        }",
        # The router's own answers are counted too: log_by_lua does not follow error_page's redirect.
        f"        location @too_large {{ return 413 $mlmodel_too_large; {_OBSERVE} }}",
        f"        location @rate_limited {{ return 429 $mlmodel_rate_limited; {_OBSERVE} }}",
        f"        location @upstream_failed {{ return 502 $mlmodel_upstream_failed; {_OBSERVE} }}",
        "    }",
    ]


def _sticky_key(md: ModelDeployment) -> str:
    """The Lua expression of a request's sticky key: the sticky header's value (``nil`` without one)."""
    header = md.routing.sticky_header
    return f"ngx.var.http_{header.lower().replace('-', '_')}" if header else "nil"


def _error_maps(md: ModelDeployment) -> list[str]:
    """Error bodies in each protocol's shape: ``/predict`` nests code and message, V1 and V2 give a string."""
    errors = {
        "unknown_variant": f"the {names.HEADER_VARIANT} header names no variant of {md.name} that it may pin",
        "override_forbidden": f"{md.name} does not take the {names.HEADER_VARIANT} header (routing.allowOverride)",
        "too_large": f"the request body is over the limit of {md.request_limit} bytes of {md.name} (maxRequestSize)",
        "no_variant": f"no variant of {md.name} is ready to serve with a weight above 0"
        " (a variant with no ready replicas gets no traffic)",
        "rate_limited": f"too many requests from this client: over the rate or connection limit of {md.name}",
        "upstream_failed": f"the variant chosen for this request did not answer ({md.name} router)",
    }
    del errors["override_forbidden" if md.routing.allow_override else "unknown_variant"]
    return [
        f"    map $mlmodel_protocol $mlmodel_{code} {{ predict {_quoted({'error': {'code': code, 'message': text}})}; "
        f"default {_quoted({'error': text, 'code': code})}; }}"
        for code, text in errors.items()
    ]


def _proxy(indent: str) -> list[str]:
    return [
        f"{indent}proxy_http_version 1.1;",
        f'{indent}proxy_set_header Connection "";',
        f"{indent}proxy_set_header X-Request-Id $mlmodel_request_id;",
        f"{indent}proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        f"{indent}# Only the router's shadow copies carry these; a client's are dropped.",
        *(f'{indent}proxy_set_header {header} "";' for header in names.SHADOW_HEADERS),
        f"{indent}proxy_next_upstream error;  # never a POST: one that crashed a server must not crash a second",
        f"{indent}proxy_connect_timeout 5s;",
        f"{indent}proxy_send_timeout 30s;",
        f"{indent}proxy_read_timeout 120s;",
    ]


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def _quoted(value: object) -> str:
    """A JSON document as an nginx single-quoted string."""
    return "'" + json.dumps(value, separators=(",", ":")).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _lua(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid Lua string literal for these names


def _lua_table(values: Mapping[str, object]) -> str:
    """A Lua table of ``values``: numbers, strings, and tables of them."""

    def value(v: object) -> str:
        return _lua_table(v) if isinstance(v, Mapping) else json.dumps(v)

    return "{" + ", ".join(f"[{_lua(k)}] = {value(v)}" for k, v in values.items()) + "}"
