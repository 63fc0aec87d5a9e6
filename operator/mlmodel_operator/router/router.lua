-- mlmodel router: live routes, metrics and shadow copies.
--
-- Routes: a routing document ("serial N"; a "variant percent address" line a variant in spec order, address
-- host:port of its Service or "-" if it is not ready; "mirror variant percent budget compare tolerance" if a
-- mirror is set) comes from the operator's weights endpoint, long-polled from a timer, and from the mounted
-- weights ConfigMap (read at start, and again after every poll: kubelet refreshes it within a minute or so,
-- which covers an operator that cannot be reached). A document is taken only if its serial is higher than the
-- one in effect, so the two sources never move the routes back. Nothing in it needs a reload: a weight moved,
-- a variant added or removed, a mirror switched on all reach this pod as it runs, and its connections stay.
-- A request's variant is the bucket its key (the sticky header's value, or the request id) hashes to:
-- contiguous buckets in spec order, so that when the weights move only the keys in the buckets that moved
-- change variant. A balancer sends it to its variant's Service, on connections kept alive per Service.
--
-- A Service this worker has never connected to is not routed to: before a document with a new address is
-- taken, the worker connects to it (for up to REACH_SECONDS; a NetworkPolicy agent, or kube-proxy, admits a new
-- address a moment after it appears), and a variant still out of reach then gets no bucket (the others share
-- its weight) until a timer reaches it. Each poll tells the operator which serial this pod routes by and whether
-- it reaches every address of it, and the operator waits for every router pod before it gives a new variant
-- all traffic or deletes a variant's Service.
--
-- Without Kubernetes (Docker Compose) nothing tells the router which variants are ready: given a probe path,
-- it asks each variant itself, after each read of the weights file (about every second), and routes only to
-- those that answered 200; the others' weight goes to them, in proportion, as the operator does in a cluster.
-- An answer other than 200, or a refused connection, takes a variant out at once; no answer within the servers'
-- readiness timeout (2 s, as their Docker healthcheck's) only SILENT times in a row (a kubelet's default
-- failureThreshold): a busy variant's probe waits behind its predictions, and taking it out for that sent all
-- its traffic to the others.
--
-- Metrics: requests and upstream latency per variant, counted at the router so that connection
-- failures and nginx's own 502/504 are seen too. The counts live in a shared dict (all nginx
-- workers add to it) and /metrics renders them in the Prometheus text format.
--
-- Shadow copies: a sampled request is sent again to the mirror variant from a timer, after the
-- client has its answer, on a kept-alive connection, with the primary's answer (a 200's, if it fits the
-- budget) in front of its body: the mirror's server compares the two (its agreement.py) and says how in a
-- header, which is counted per shadow and primary (with the mirror's compare off, no answer goes with the copy
-- and none is kept); the copy's body is dropped. nginx's own `mirror` holds
-- a kept-alive client connection until the copy is answered, so a slow shadow would slow every
-- next request on it; here it cannot. A worker holds at most the mirror's budget of bodies and
-- answers for copies not yet sent (let go once sent, within the send timeout): a copy that would
-- go over it is skipped, an answer that would is not sent (the copy is counted uncompared), and a
-- copy that no timer can take (too many pending) is skipped too.
local M = {}
local balancer = require("ngx.balancer")
local dict = ngx.shared.mlmodel_metrics
local BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }
local CLASSES = { "1xx", "2xx", "3xx", "4xx", "5xx" }
local MIRRORED = { "1xx", "2xx", "3xx", "4xx", "5xx", "skipped" } -- skipped: over the budget, or no timer
local ALWAYS = { ["2xx"] = true, ["4xx"] = true, ["5xx"] = true } -- shown at 0 before the first request
local HOP_BY_HOP = {
    connection = true, ["keep-alive"] = true, te = true, trailer = true, ["transfer-encoding"] = true,
    upgrade = true, ["proxy-connection"] = true, host = true, ["content-length"] = true, ["x-request-id"] = true,
    ["x-mlmodel-primary-length"] = true, ["x-mlmodel-primary-header-length"] = true,
    ["x-mlmodel-tolerance"] = true,
}
-- A copy's comparison (X-Mlmodel-Comparison from the shadow's server): the counters it adds to, per pair.
local COMPARED = {
    { "requests", "mlmodel_router_shadow_compared_requests_total", "Copies whose answer was compared with the primary's." },
    { "uncompared", "mlmodel_router_shadow_uncompared_requests_total",
        "Copies answered without a comparison: the primary's answer was over the budget, not a 200, or unreadable." },
    { "rows", "mlmodel_router_shadow_compared_rows_total", "Rows compared." },
    { "agreed", "mlmodel_router_shadow_agreed_rows_total",
        "Rows that agreed: the same label, or a regressor's output within the tolerance." },
    { "delta", "mlmodel_router_shadow_delta_sum",
        "Sum over the rows of the mean absolute difference (of the probabilities, for a classifier)." },
}
local BUCKETS_TOTAL = 10000
-- Predicted labels counted per variant (X-Mlmodel-Predicted, the server's predicted.py): past them, "other".
local MAX_LABELS = 64
local WAIT = 20 -- seconds the operator may hold a poll before it answers with the same routes
-- $mlmodel_variant when the override header names no variant it may pin, when it is sent but not allowed, and
-- when no variant can take the request (traffic.py's UNKNOWN, FORBIDDEN and NONE).
local UNKNOWN, FORBIDDEN, NONE = "?", "!", "-"
local REACH_SECONDS = 1 -- how long a new address is tried before the document is taken without it
local REACH_TIMEOUT = 200 -- ms: one connect to a new address
local labels, follow, pod = {}, {}, "-"
-- The routes in effect: their serial, {variant = percent} this pod routes by, the routable buckets ({variant,
-- percent} in spec order, only variants reached and with a weight), their percents' sum, and the header text.
local current = { serial = -1, weights = {}, buckets = {}, total = 0, text = "" }
local order = {} -- the document in effect: {variant, percent} in spec order
local targets = {} -- the document in effect: {variant = {host, port, key}} for those with an address
local mirror = nil -- the document in effect: {variant, percent, budget, compare, tolerance}, or nil
local reached = {} -- {"host:port" = true}: the addresses this worker has connected to
local ready = false -- this worker has reached every address of a document once
local healthy = nil -- with a probe: {variant = true} for those that answered it last time
local silent = {} -- with a probe: {variant = probes in a row it did not answer in time}
local failing = {} -- with a probe: {variant = why its last probe failed}, logged when it changes
local SILENT = 3
local PROBE_TIMEOUT = 2000 -- ms: the servers' readinessProbe.timeoutSeconds by default
local pending = 0 -- bytes of bodies held by this worker for copies not yet sent

local function parse(document)
    local serial = tonumber(string.match(document or "", "^serial (%d+)\n"))
    if not serial then
        return nil
    end
    local parsed = { serial = serial, order = {}, targets = {} }
    for line in string.gmatch(document, "[^\n]+") do
        local name, percent, address = string.match(line, "^([%w%-]+) (%d+) (%S+)$")
        local m = { string.match(line, "^mirror ([%w%-]+) (%d+) (%d+) (%a+) (%S+)$") }
        if name then
            parsed.order[#parsed.order + 1] = { name, tonumber(percent) }
            local host, port = string.match(address, "^(.+):(%d+)$")
            if host then
                parsed.targets[name] = { host = host, port = tonumber(port), key = address }
            end
        elseif m[1] then
            parsed.mirror = { variant = m[1], percent = tonumber(m[2]), budget = tonumber(m[3]),
                compare = m[4] == "compare", tolerance = m[5] ~= "-" and m[5] or nil }
        end
    end
    return parsed
end

-- A variant this pod routes to: it has an address, and (with a probe) answered it, else this worker reached it.
local function routable(name)
    local target = targets[name]
    if not target then
        return false
    end
    if follow.probe then
        return not healthy or healthy[name]
    end
    return reached[target.key]
end

-- How many addresses of the document in effect this worker has not reached (their variants get no traffic). With a
-- probe, none: whether a variant is routed to is whether it answers the probe, not whether it was reached once.
local function unreached()
    if follow.probe then
        return 0
    end
    local count = 0
    for _, target in pairs(targets) do
        count = count + (reached[target.key] and 0 or 1)
    end
    return count
end

local function reaches_all()
    return unreached() == 0
end

-- Route by ``order`` (the document's serial ``serial``): over the variants this pod can route to, in proportion
-- to their weights.
local function route(serial)
    local weights, buckets, total, text = {}, {}, 0, {}
    for _, entry in ipairs(order) do
        if routable(entry[1]) and entry[2] > 0 then
            buckets[#buckets + 1] = entry
            total = total + entry[2]
        end
    end
    -- What this pod routes by: a variant it cannot route to gets 0, the others share its weight.
    for _, entry in ipairs(order) do
        local name = entry[1]
        weights[name] = routable(name) and total > 0 and math.floor(entry[2] * 100 / total + 0.5) or 0
        text[#text + 1] = name .. "=" .. weights[name]
    end
    current = { serial = serial, weights = weights, buckets = buckets, total = total, text = table.concat(text, ",") }
    ready = ready or reaches_all()
end

-- One connect to ``target``: true, and remembered, if it was accepted.
local function reach(target)
    if reached[target.key] then
        return true
    end
    local sock = ngx.socket.tcp()
    sock:settimeout(REACH_TIMEOUT)
    local ok = sock:connect(target.host, target.port)
    sock:close()
    reached[target.key] = ok and true or nil
    return reached[target.key]
end

-- Connect to every address of ``addresses`` ({variant = target}) not reached yet, until all are or ``seconds`` have
-- passed.
local function reach_all(addresses, seconds)
    local deadline = ngx.now() + seconds
    while true do
        local missing = false
        for _, target in pairs(addresses) do
            missing = not reach(target) or missing
        end
        if not missing or ngx.now() >= deadline or ngx.worker.exiting() then
            return not missing
        end
        ngx.sleep(0.05)
        ngx.update_time()
    end
end

local report -- defined below: tell the operator which serial this pod routes by

-- A timer: reach the addresses of the document in effect still out of reach, then route to them and say so.
local function keep_reaching(premature, serial)
    while not premature and not ngx.worker.exiting() and current.serial == serial do
        if reach_all(targets, 1) then
            route(serial)
            ngx.log(ngx.NOTICE, "routes ", serial, ": every address reached: ", current.text)
            report()
            return
        end
    end
end

-- Take ``document`` if it is newer than the routes in effect; from ``origin``, for the log. An address still out of
-- reach is left to a timer (at init, where no connection can be made, follow() starts it).
local function adopt(document, origin)
    local parsed = parse(document)
    if not parsed or parsed.serial <= current.serial then
        return
    end
    local all = true
    if not follow.probe and ngx.get_phase() ~= "init" then
        all = reach_all(parsed.targets, REACH_SECONDS)
        if parsed.serial <= current.serial then -- the other source's newer document was taken meanwhile
            return
        end
    end
    order, targets, mirror = parsed.order, parsed.targets, parsed.mirror
    route(parsed.serial)
    ngx.log(ngx.NOTICE, "routes ", parsed.serial, " from ", origin, ": ", current.text)
    if not all then
        ngx.log(ngx.NOTICE, "routes ", parsed.serial, ": an address is out of reach; its variant gets no traffic")
        ngx.timer.at(0, keep_reaching, parsed.serial)
    end
end

-- With a probe path: ask each variant for it (HTTP/1.0), and route again if the answers changed.
local function probe()
    local answered, changed = {}, healthy == nil
    for name, target in pairs(targets) do
        local sock = ngx.socket.tcp()
        sock:settimeouts(PROBE_TIMEOUT, PROBE_TIMEOUT, PROBE_TIMEOUT)
        local ok, err = sock:connect(target.host, target.port)
        if ok then
            ok, err = sock:send("GET " .. follow.probe .. " HTTP/1.0\r\nHost: " .. target.host .. "\r\n\r\n")
        end
        local line
        if ok then
            line, err = sock:receive("*l")
        end
        sock:close()
        local why = err or (not string.match(line, "^HTTP/%d%.%d 200 ") and line) or nil
        if why ~= failing[name] then -- a refusal at start, say, or a name Docker's DNS does not resolve yet
            failing[name] = why
            if why then
                ngx.log(ngx.NOTICE, "probe of ", name, " ", follow.probe, ": ", why)
            end
        end
        silent[name] = err == "timeout" and (silent[name] or 0) + 1 or 0
        if silent[name] > 0 and silent[name] < SILENT then
            answered[name] = healthy and healthy[name] -- as it was, until SILENT probes in a row go unanswered
        else
            answered[name] = line and string.match(line, "^HTTP/%d%.%d 200 ") ~= nil or nil
        end
        if answered[name] ~= (healthy and healthy[name]) then
            changed = true
        end
    end
    if changed then
        healthy = answered
        route(current.serial)
        ngx.log(ngx.NOTICE, "variants answering ", follow.probe, ": ", current.text)
    end
end

local function read_file()
    local file = io.open(follow.file, "rb")
    if file then
        local document = file:read("*a")
        file:close()
        adopt(document, "file")
    end
end

-- Called once at start: the ModelDeployment's name, config digest and whether the override header is taken,
-- and where the routes come from ({file, source = {host, port, path} or nil, probe = path or nil}).
function M.init(settings, routes)
    labels, follow = settings, routes
    local hostname = io.open("/etc/hostname", "rb") -- the pod's name, in a pod: how the operator knows it
    if hostname then
        pod = string.match(hostname:read("*a") or "", "^[%w%.%-]+") or "-"
        hostname:close()
    end
    read_file()
end

-- One long poll of the operator (held up to ``wait`` seconds while it has nothing newer): true once it answered
-- (with routes, or none for this ModelDeployment), and whether the connection was refused.
local function poll(wait)
    local source = follow.source
    local sock = ngx.socket.tcp()
    sock:settimeouts(1000, 1000, (wait + 5) * 1000) -- connect, send, read (ms)
    local ok, err = sock:connect(source.host, source.port)
    if ok then
        ok, err = sock:send("GET " .. source.path .. "?serial=" .. current.serial .. "&wait=" .. wait
            .. "&pod=" .. pod .. "&reached=" .. (reaches_all() and 1 or 0)
            .. " HTTP/1.0\r\nHost: mlmodel-operator\r\n\r\n")
    end
    local line = ok and sock:receive("*l")
    local status = line and tonumber(string.match(line, "^HTTP/%d%.%d (%d%d%d)"))
    while status and line and line ~= "" do
        line = sock:receive("*l")
    end
    local body = status == 200 and line == "" and sock:receive("*a")
    sock:close()
    if body then
        adopt(body, "the operator")
    elseif status ~= 404 and err ~= "connection refused" then -- refused: a standby, or the operator restarting
        ngx.log(ngx.WARN, "routes from the operator: ", err or ("HTTP " .. tostring(status)))
    end
    return status == 200 or status == 404, err == "connection refused"
end

report = function()
    if follow.source then
        poll(0)
    end
end

-- Polls the operator. Its Service also leads to standby replicas, which refuse the
-- connection at once: a refused poll is tried again at once, up to QUICK times in a row (through the Service,
-- the next one most likely reaches the leader; backing off there left a router without a poll at the leader
-- for seconds, and routes published meanwhile reached it late). Other failures, and refusals past QUICK (no
-- operator up), are tried again soon, then less and less often (up to every second).
local QUICK = 8
local function watch(premature)
    local failures, refusals = 0, 0
    while not premature and not ngx.worker.exiting() do
        local answered, refused = false, false
        answered, refused = poll(WAIT)
        if answered then
            failures, refusals = 0, 0
        elseif refused and refusals < QUICK then
            refusals = refusals + 1
            ngx.sleep(0.005)
        else
            failures = failures + 1
            ngx.sleep(math.min(1, 0.05 * 2 ^ (failures - 1)))
        end
    end
end

-- Reads the file every second, whatever the polls do (the operator may be out of reach, or hold a poll while it has
-- no routes for this ModelDeployment: a new leader before its first pass); with a probe, probes after each read.
local function read_every_second(premature)
    while not premature and not ngx.worker.exiting() do
        read_file()
        if follow.probe then
            probe()
        end
        ngx.sleep(1)
    end
end

-- init_worker: reach the addresses of the document read at start, and follow the routes from timers, for as
-- long as the worker runs.
function M.follow()
    local ok, err = ngx.timer.at(0, read_every_second)
    if ok and follow.source then
        ok, err = ngx.timer.at(0, watch)
    end
    if ok and not follow.probe then
        ok, err = ngx.timer.at(0, keep_reaching, current.serial)
    end
    if not ok then
        ngx.log(ngx.ERR, "cannot follow the routes: ", err)
    end
end

-- The pick by weight: the variant of the bucket of the sticky key, or of the request id; NONE if none has weight.
local function pick(sticky)
    if current.total == 0 then
        return NONE
    end
    local key = (sticky and sticky ~= "") and sticky or ngx.var.request_id
    local point = ngx.crc32_long(key) % BUCKETS_TOTAL
    local edge = 0
    for _, entry in ipairs(current.buckets) do
        edge = edge + entry[2] * BUCKETS_TOTAL / current.total
        if point < edge then
            return entry[1]
        end
    end
    return current.buckets[#current.buckets][1]
end

-- The variant for a request: the one the override header (``header``) pins, if it may, else the pick by weight;
-- UNKNOWN, FORBIDDEN or NONE if it cannot have one. Its address goes with the request (ngx.ctx.target): new
-- routes taken meanwhile do not move a request already routed.
function M.choose(header, sticky)
    local name
    if header and header ~= "" then
        if not labels.override then
            return FORBIDDEN
        end
        local known = false -- a variant of the document, but not the mirror's (it gets copies only)
        for _, entry in ipairs(order) do
            known = known or entry[1] == header
        end
        if not known or (mirror and mirror.variant == header) then
            return UNKNOWN
        end
        name = routable(header) and header or NONE
    else
        name = pick(sticky)
    end
    ngx.ctx.target = targets[name]
    return name
end

-- Without a balancer (Docker Compose): the chosen variant's host:port, resolved by nginx.
function M.address()
    local target = ngx.ctx.target
    return target and target.key or ""
end

-- The balancer: the chosen variant's Service.
function M.balance()
    local target = ngx.ctx.target
    local ok, err = balancer.set_current_peer(target.host, target.port)
    if not ok then
        ngx.log(ngx.ERR, "cannot route to ", target.key, ": ", err)
        return ngx.exit(502)
    end
end

-- The weights this pod routes by, "stable=90,canary=10", for the response header.
function M.weights()
    return current.text
end

-- /ready: ready once this worker has reached every address of its routes. A new router pod must not get
-- traffic before it can pass it on; a NetworkPolicy agent, say, admits a new pod's address a moment after the
-- pod starts. Once reached, it stays ready: a variant that goes down later is that variant's 502s, not a
-- router taken out of its Service. With a probe (Docker Compose), ready while a variant with weight answers it:
-- what `docker compose up --wait` waits for is a router that routes.
function M.ready()
    ngx.header["Content-Type"] = "application/json"
    if follow.probe and (not healthy or current.total == 0) then
        ngx.status = 503
        ngx.say(string.format('{"status":"no_variant","weights":"%s"}', current.text))
        return
    end
    if not ready and not follow.probe then -- with a probe, an unreachable variant is just not routed to
        for variant, target in pairs(targets) do
            if not reached[target.key] then
                ngx.status = 503
                ngx.say(string.format('{"status":"unreachable","variant":"%s","address":"%s"}', variant, target.key))
                return
            end
        end
    end
    ngx.say(string.format('{"status":"ready","config":"%s","serial":%d}', labels.config, current.serial))
end

local function class(status)
    return string.sub(tostring(status), 1, 1) .. "xx"
end

local function mirrored(to, outcome)
    dict:incr("mirrored\t" .. to.variant .. "\t" .. outcome, 1, 0)
end

-- A copy's comparison by the mirror ``to`` with the answer of ``primary`` ("rows=3;agreed=2;delta=0.1;…"), or nil.
local function compared(to, primary, comparison)
    local prefix = "shadow\t" .. to.variant .. "\t" .. primary .. "\t"
    if not comparison then
        dict:incr(prefix .. "uncompared", 1, 0)
        return
    end
    dict:incr(prefix .. "requests", 1, 0)
    for key, value in string.gmatch(comparison, "([%w_.+]+)=([%d.eE+-]+)") do
        local number = tonumber(value)
        if number then
            dict:incr(prefix .. key, number, 0)
        end
    end
end

-- An answer's rows by predicted class ("setosa=2;virginica=1", labels percent-encoded), added to its variant's.
local function count_predicted(variant, predicted)
    for label, rows in string.gmatch(predicted, "([%w%%._~-]+)=(%d+)") do
        local key, n = "predicted\t" .. variant .. "\t" .. label, tonumber(rows)
        if not dict:incr(key, n) then
            if dict:incr("labels\t" .. variant, 1, 0) > MAX_LABELS then
                key = "predicted\t" .. variant .. "\tother"
            end
            dict:incr(key, n, 0)
        end
    end
end

-- The body of the request, if it fits in what is left of ``budget``; false if it does not.
local function body_within_budget(budget)
    ngx.req.read_body()
    local body = ngx.req.get_body_data()
    if body then
        return pending + #body <= budget and body
    end
    local path = ngx.req.get_body_file()
    if not path then
        return ""
    end
    local file = io.open(path, "rb") -- a big body nginx buffered to a file: its size first
    if not file then
        return false
    end
    local size = file:seek("end")
    if not size or pending + size > budget then
        file:close()
        return false
    end
    file:seek("set")
    body = file:read("*a")
    file:close()
    return body
end

-- The access phase of every request: if the mirror's sample (by the request id) takes it, keep what its copy
-- needs, within the budget. A mirror not ready (no address) gets no copy.
function M.capture()
    local to = mirror and targets[mirror.variant] and mirror
    if not to or ngx.crc32_long(ngx.var.request_id .. "mirror") % BUCKETS_TOTAL >= to.percent * BUCKETS_TOTAL / 100 then
        return
    end
    local body = body_within_budget(to.budget)
    if not body then
        mirrored(to, "skipped")
        return
    end
    pending = pending + #body
    ngx.ctx.copy = {
        mirror = to,
        target = targets[to.variant],
        method = ngx.req.get_method(),
        uri = ngx.var.request_uri,
        headers = ngx.req.get_headers(100),
        request_id = ngx.var.mlmodel_request_id,
        body = body,
        answer = to.compare and {} or nil, -- the primary's answer in chunks, while it fits the budget
        held = 0,
    }
end

-- The body filter of a request with a copy: keep the primary's answer for the comparison, within the budget.
function M.keep()
    local copy = ngx.ctx.copy
    local chunk = ngx.arg[1]
    if not copy or not copy.answer or chunk == "" then
        return
    end
    if pending + #chunk > copy.mirror.budget then
        pending = pending - copy.held
        copy.answer, copy.held = nil, 0
        return
    end
    copy.answer[#copy.answer + 1] = chunk
    copy.held = copy.held + #chunk
    pending = pending + #chunk
end

-- One request to the mirror on a kept-alive connection of the pool, ``sent()`` called once it is sent (or given
-- up): the status and the X-Mlmodel-Comparison header of the answer, whose body is read and dropped. A pooled
-- connection that the server closed meanwhile fails before the status line: the request goes once more on a
-- new one. No answer: nil.
local function exchange(target, parts, sent)
    for _ = 1, 2 do
        local sock = ngx.socket.tcp()
        sock:settimeouts(1000, 10000, 120000) -- connect, send, read (ms)
        local ok = sock:connect(target.host, target.port)
        local reused = ok and sock:getreusedtimes() or 0
        ok = ok and sock:send(parts)
        local line = ok and sock:receive("*l")
        if line or reused == 0 then
            sent()
            local status = line and tonumber(string.match(line, "^HTTP/%d%.%d (%d%d%d)"))
            local comparison, length = nil, nil
            local close = line and string.find(line, "^HTTP/1%.0") ~= nil -- an HTTP/1.0 server closes
            while status and line and line ~= "" do
                line = sock:receive("*l")
                if line then
                    local lower = string.lower(line)
                    comparison = comparison or string.match(line, "^[Xx]%-[Mm]lmodel%-[Cc]omparison:%s*(.-)%s*$")
                    length = length or tonumber(string.match(lower, "^content%-length:%s*(%d+)"))
                    close = close or string.find(lower, "^connection:%s*close") ~= nil
                end
            end
            local drained = status and line == "" and length and (length == 0 or sock:receive(length))
            if drained and not close then
                sock:setkeepalive(60000, 32)
            else
                sock:close()
            end
            return status, comparison
        end
        sock:close()
    end
    sent()
end

-- A timer: one copy to the mirror over HTTP/1.1, with the primary's answer in front of its body if kept.
local function send(premature, copy)
    local size = #copy.body + copy.held
    if premature then
        pending = pending - size
        return
    end
    local answer = copy.answer and table.concat(copy.answer) or ""
    local lines = {
        copy.method .. " " .. copy.uri .. " HTTP/1.1",
        "Host: " .. copy.target.host,
        "Content-Length: " .. (#answer + #copy.body),
        "X-Request-Id: " .. copy.request_id,
    }
    if copy.answer then -- the shadow's server compares its answer with this one, and says how in a header
        lines[#lines + 1] = "X-Mlmodel-Primary-Length: " .. #answer
        if copy.header_length then
            lines[#lines + 1] = "X-Mlmodel-Primary-Header-Length: " .. copy.header_length
        end
        if copy.mirror.tolerance then
            lines[#lines + 1] = "X-Mlmodel-Tolerance: " .. copy.mirror.tolerance
        end
    end
    for name, value in pairs(copy.headers) do
        if not HOP_BY_HOP[name] then
            for _, v in ipairs(type(value) == "table" and value or { value }) do
                lines[#lines + 1] = name .. ": " .. v
            end
        end
    end
    lines[#lines + 1] = "\r\n"
    local parts = { table.concat(lines, "\r\n"), answer, copy.body }
    copy.body, copy.answer, answer = nil, nil, nil
    local status, comparison = exchange(copy.target, parts, function()
        parts[1], parts[2], parts[3] = nil, nil, nil
        pending = pending - size -- sent, or given up within the connect and send timeouts
    end)
    mirrored(copy.mirror, status and class(status) or "5xx") -- no answer is counted as nginx would: a 5xx
    if status == 200 and copy.mirror.compare then
        compared(copy.mirror, copy.primary, comparison)
    end
end

-- The log phase of every request: which variant answered (none if the router answered itself).
function M.observe()
    local copy = ngx.ctx.copy
    if copy then
        copy.primary = ngx.var.mlmodel_variant
        if ngx.status ~= 200 and copy.answer then -- only a 200 is compared
            pending = pending - copy.held
            copy.answer, copy.held = nil, 0
        end
        copy.header_length = ngx.header["Inference-Header-Content-Length"]
        if not ngx.timer.at(0, send, copy) then
            pending = pending - #copy.body - copy.held
            mirrored(copy.mirror, "skipped")
        end
    end
    local variant = ngx.var.mlmodel_variant
    if not ngx.var.upstream_addr then
        variant = "none"
    end
    dict:incr("requests\t" .. variant .. "\t" .. class(ngx.status), 1, 0)
    local predicted = ngx.status == 200 and ngx.var.upstream_http_x_mlmodel_predicted
    if predicted then
        count_predicted(variant, predicted)
    end
    local seconds, seen = 0, false
    for part in string.gmatch(ngx.var.upstream_response_time or "", "[%d.]+") do
        seconds, seen = seconds + tonumber(part), true
    end
    if not seen then
        return
    end
    for i, le in ipairs(BUCKETS) do
        if seconds <= le then
            dict:incr("bucket\t" .. variant .. "\t" .. i, 1, 0)
        end
    end
    dict:incr("sum\t" .. variant, seconds, 0)
    dict:incr("count\t" .. variant, 1, 0)
end

local function series(name, variant, extra, value)
    return string.format('%s{model="%s",variant="%s"%s} %s', name, labels.model, variant, extra, value)
end

local function variants()
    local seen, out = {}, {}
    for name in pairs(current.weights) do
        seen[name] = true
    end
    for _, key in ipairs(dict:get_keys(0)) do
        local variant = string.match(key, "^[^\t]+\t([^\t]+)")
        if variant then
            seen[variant] = true
        end
    end
    for name in pairs(seen) do
        out[#out + 1] = name
    end
    table.sort(out)
    return out
end

-- Each variant's rows answered, by predicted class.
local function render_predicted(out)
    local found = {}
    for _, key in ipairs(dict:get_keys(0)) do
        local variant, label = string.match(key, "^predicted\t([^\t]+)\t(.+)$")
        if variant then
            found[#found + 1] = { variant, label, dict:get(key) or 0 }
        end
    end
    table.sort(found, function(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) end)
    local name = "mlmodel_router_predictions_total"
    out[#out + 1] = "# HELP " .. name .. " Rows answered, by predicted class (a regressor's: its output's bin)."
    out[#out + 1] = "# TYPE " .. name .. " counter"
    for _, row in ipairs(found) do
        out[#out + 1] = series(name, row[1], ',class="' .. row[2] .. '"', row[3])
    end
end

-- The comparisons' counters, per (shadow, primary), and the histogram of the rows' probability delta.
local function render_comparisons(out)
    local pairs_seen, buckets = {}, {}
    for _, key in ipairs(dict:get_keys(0)) do
        local shadow, primary, name = string.match(key, "^shadow\t([^\t]+)\t([^\t]+)\t(.+)$")
        if shadow then
            local pair = shadow .. "\t" .. primary
            pairs_seen[pair] = pairs_seen[pair] or { shadow, primary }
            local le = string.match(name, "^le_(.+)$")
            if le then
                buckets[#buckets + 1] = { pair, tonumber(le) or math.huge, le, dict:get(key) }
            end
        end
    end
    local ordered = {}
    for pair, names in pairs(pairs_seen) do
        ordered[#ordered + 1] = { pair, names[1], names[2] }
    end
    table.sort(ordered, function(a, b) return a[1] < b[1] end)
    for _, counter in ipairs(COMPARED) do
        local metric = counter[2]
        out[#out + 1] = "# HELP " .. metric .. " " .. counter[3]
        out[#out + 1] = "# TYPE " .. metric .. " counter"
        for _, pair in ipairs(ordered) do
            local value = dict:get("shadow\t" .. pair[1] .. "\t" .. counter[1]) or 0
            out[#out + 1] = series(metric, pair[2], ',primary="' .. pair[3] .. '"', value)
        end
    end
    local h = "mlmodel_router_shadow_probability_delta"
    out[#out + 1] = "# HELP " .. h .. " The rows' mean absolute difference of class probabilities, shadow against primary."
    out[#out + 1] = "# TYPE " .. h .. " histogram"
    table.sort(buckets, function(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) end)
    for _, pair in ipairs(ordered) do
        local count
        for _, bucket in ipairs(buckets) do
            if bucket[1] == pair[1] then
                out[#out + 1] = series(h .. "_bucket", pair[2], ',primary="' .. pair[3] .. '",le="' .. bucket[3] .. '"', bucket[4])
                count = bucket[2] == math.huge and bucket[4] or count
            end
        end
        if count then
            local delta = dict:get("shadow\t" .. pair[1] .. "\tdelta") or 0
            out[#out + 1] = series(h .. "_sum", pair[2], ',primary="' .. pair[3] .. '"', delta)
            out[#out + 1] = series(h .. "_count", pair[2], ',primary="' .. pair[3] .. '"', count)
        end
    end
end

function M.render()
    local out = {
        "# HELP mlmodel_router_config_info The router configuration in effect.",
        "# TYPE mlmodel_router_config_info gauge",
        string.format('mlmodel_router_config_info{model="%s",config="%s"} 1', labels.model, labels.config),
        "# HELP mlmodel_router_weights_serial The serial of the weights in effect.",
        "# TYPE mlmodel_router_weights_serial gauge",
        string.format('mlmodel_router_weights_serial{model="%s"} %d', labels.model, current.serial),
        "# HELP mlmodel_router_addresses_unreached Variants' Service addresses in the routes this pod has not reached.",
        "# TYPE mlmodel_router_addresses_unreached gauge",
        string.format('mlmodel_router_addresses_unreached{model="%s"} %d', labels.model, unreached()),
        "# HELP mlmodel_router_weight Applied traffic weight of a variant, in percent.",
        "# TYPE mlmodel_router_weight gauge",
    }
    local weights = current.weights
    local names = variants()
    for _, variant in ipairs(names) do
        if weights[variant] then
            out[#out + 1] = series("mlmodel_router_weight", variant, "", weights[variant])
        end
    end
    for _, kind in ipairs({ "requests", "mirrored" }) do
        local name = kind == "requests" and "mlmodel_router_requests_total" or "mlmodel_router_mirrored_requests_total"
        out[#out + 1] = "# HELP " .. name .. " Requests by variant and status class, counted at the router."
        out[#out + 1] = "# TYPE " .. name .. " counter"
        for _, variant in ipairs(names) do
            for _, c in ipairs(kind == "requests" and CLASSES or MIRRORED) do
                local value = dict:get(kind .. "\t" .. variant .. "\t" .. c)
                if value or (kind == "requests" and weights[variant] and ALWAYS[c]) then
                    out[#out + 1] = series(name, variant, ',status_class="' .. c .. '"', value or 0)
                end
            end
        end
    end
    render_predicted(out)
    render_comparisons(out)
    out[#out + 1] = "# HELP mlmodel_router_upstream_latency_seconds Time to the variant's full response."
    out[#out + 1] = "# TYPE mlmodel_router_upstream_latency_seconds histogram"
    local h = "mlmodel_router_upstream_latency_seconds"
    for _, variant in ipairs(names) do
        if weights[variant] then
            for i, le in ipairs(BUCKETS) do
                local value = dict:get("bucket\t" .. variant .. "\t" .. i) or 0
                out[#out + 1] = series(h .. "_bucket", variant, ',le="' .. le .. '"', value)
            end
            local count = dict:get("count\t" .. variant) or 0
            out[#out + 1] = series(h .. "_bucket", variant, ',le="+Inf"', count)
            out[#out + 1] = series(h .. "_sum", variant, "", dict:get("sum\t" .. variant) or 0)
            out[#out + 1] = series(h .. "_count", variant, "", count)
        end
    end
    ngx.header["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
    ngx.print(table.concat(out, "\n"), "\n")
end

return M
