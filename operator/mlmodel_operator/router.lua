-- mlmodel router metrics: requests and upstream latency per variant, counted at the router so that
-- connection failures and nginx's own 502/504 are seen too. The counts live in a shared dict (all
-- nginx workers add to it) and /metrics renders them in the Prometheus text format.
local M = {}
local dict = ngx.shared.mlmodel_metrics
local BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }
local CLASSES = { "1xx", "2xx", "3xx", "4xx", "5xx" }
local ALWAYS = { ["2xx"] = true, ["4xx"] = true, ["5xx"] = true } -- shown at 0 before the first request
local labels, weights = {}, {}

-- Called once at start: the ModelDeployment's name and config digest, and the applied weights.
function M.init(settings, applied)
    labels, weights = settings, applied
end

local function class(status)
    return string.sub(tostring(status), 1, 1) .. "xx"
end

-- The log phase of every request: which variant answered (none if the router answered itself).
function M.observe()
    local variant = ngx.var.mlmodel_variant
    if not ngx.var.upstream_addr then
        variant = "none"
    end
    dict:incr("requests\t" .. variant .. "\t" .. class(ngx.status), 1, 0)
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

-- The header filter of a mirrored copy: its status, then nginx discards it.
function M.mirrored(variant)
    dict:incr("mirrored\t" .. variant .. "\t" .. class(ngx.status), 1, 0)
end

local function series(name, variant, extra, value)
    return string.format('%s{model="%s",variant="%s"%s} %s', name, labels.model, variant, extra, value)
end

local function variants()
    local seen, out = {}, {}
    for name in pairs(weights) do
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

function M.render()
    local out = {
        "# HELP mlmodel_router_config_info The router configuration in effect.",
        "# TYPE mlmodel_router_config_info gauge",
        string.format('mlmodel_router_config_info{model="%s",config="%s"} 1', labels.model, labels.config),
        "# HELP mlmodel_router_weight Applied traffic weight of a variant, in percent.",
        "# TYPE mlmodel_router_weight gauge",
    }
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
            for _, c in ipairs(CLASSES) do
                local value = dict:get(kind .. "\t" .. variant .. "\t" .. c)
                if value or (kind == "requests" and weights[variant] and ALWAYS[c]) then
                    out[#out + 1] = series(name, variant, ',status_class="' .. c .. '"', value or 0)
                end
            end
        end
    end
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
