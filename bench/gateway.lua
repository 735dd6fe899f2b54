-- wrk script for bench/gateway.py: POSTs a chat completion and, when
-- BENCH_HEADER names a response header, collects its values (the gateway's
-- own overhead in ms). done() writes a JSON summary to BENCH_OUT.
--
--   BENCH_BODY='{"model":...}' BENCH_AUTH='Bearer oc_...' BENCH_HEADER=x-openclaw-overhead-ms \
--   BENCH_OUT=/tmp/out.json wrk -t1 -c1 -d5s --latency -s bench/gateway.lua http://host:port/v1/chat/completions

wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then
  wrk.headers["Authorization"] = auth
end
-- BENCH_VERSION: the anthropic-version header of /v1/messages requests
local version = os.getenv("BENCH_VERSION")
if version and version ~= "" then
  wrk.headers["anthropic-version"] = version
end

local header = os.getenv("BENCH_HEADER")
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

if header and header ~= "" then
  values = {}
  statuses = {}
  local upper = header:gsub("(%a)([%w]*)", function(a, b) return a:upper() .. b end)

  function response(status, headers, body)
    local value = headers[header] or headers[upper]
    if value then
      values[#values + 1] = tonumber(value)
    end
    statuses[status] = (statuses[status] or 0) + 1
  end
end

function done(summary, latency, requests)
  local out = io.open(os.getenv("BENCH_OUT"), "w")
  local parts = {}
  for _, thread in ipairs(threads) do
    local collected = thread:get("values")
    if collected then
      for _, v in ipairs(collected) do
        parts[#parts + 1] = string.format("%.3f", v)
      end
    end
  end
  out:write(string.format(
    '{"requests": %d, "duration_us": %d, "errors_status": %d, "errors_connect": %d, ' ..
    '"errors_read": %d, "errors_timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"header_values": [%s]}',
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.timeout, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), table.concat(parts, ", ")))
  out:close()
end
