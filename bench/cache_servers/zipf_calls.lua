-- wrk script of `toolmesh bench cache`: one MCP tools/call per request (2026-07-28, stateless),
-- its `sku` argument drawn from a Zipf distribution over the 300 demo SKUs; every answer checked.
--
-- Environment (read once per wrk thread):
--   BENCH_TOOL     tool name (as the gateway exposes it); called with {"sku": "SKU-1xxx"}
--   BENCH_AUTH     bearer token (optional)
--   BENCH_ZIPF_S   Zipf exponent (default 1.1)
--   BENCH_SKUS     how many SKUs (default 300: SKU-1001 ... SKU-1300)
--   BENCH_MAX_AGE  an answer whose "computed_at" (the upstream's wall clock) is older than this many
--                  seconds counts as stale (default 6.25: a 5 s TTL plus wrk's 1 s clock resolution)
--   BENCH_SEED     random seed (default: the time)
--
-- An answer counts as ok only if it is HTTP 200 with a JSON-RPC "result", no "error" member, no
-- "isError": true, and carries a SKU and "computed_at". done() prints one JSON line after the
-- marker @@WRK_JSON (counts and latency percentiles in microseconds).

local tool = os.getenv("BENCH_TOOL") or "get_stock"
local auth = os.getenv("BENCH_AUTH")
local s = tonumber(os.getenv("BENCH_ZIPF_S") or "1.1")
local n_skus = tonumber(os.getenv("BENCH_SKUS") or "300")
local max_age = tonumber(os.getenv("BENCH_MAX_AGE") or "6.25")
local era = "2026-07-28"

-- Cumulative Zipf weights: rank k has weight 1 / k^s.
local cdf, total = {}, 0
for k = 1, n_skus do
  total = total + 1 / (k ^ s)
  cdf[k] = total
end
for k = 1, n_skus do cdf[k] = cdf[k] / total end

local function draw()
  local u, lo, hi = math.random(), 1, n_skus
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  return lo
end

local headers = {
  ["Content-Type"] = "application/json",
  ["Accept"] = "application/json, text/event-stream",
  ["Mcp-Protocol-Version"] = era,
  ["Mcp-Method"] = "tools/call",
  ["Mcp-Name"] = tool,
}
if auth and auth ~= "" then headers["Authorization"] = "Bearer " .. auth end
local meta = '"_meta":{"io.modelcontextprotocol/protocolVersion":"' .. era ..
  '","io.modelcontextprotocol/clientCapabilities":{}}'

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  ok, bad_status, rpc_errors, stale, first_error = 0, 0, 0, 0, nil
  math.randomseed(tonumber(os.getenv("BENCH_SEED") or os.time()) + (id or 0))
end

function request()
  local sku = "SKU-" .. (1000 + draw())
  local body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"' .. tool ..
    '","arguments":{"sku":"' .. sku .. '"},' .. meta .. '}}'
  return wrk.format("POST", nil, headers, body)
end

function response(status, hdrs, body)
  if status ~= 200 then
    bad_status = bad_status + 1
    if not first_error then first_error = "HTTP " .. status .. ": " .. string.sub(body or "", 1, 300) end
    return
  end
  body = body or ""
  local at = tonumber(string.match(body, '"computed_at"%s*:%s*([%d%.]+)'))
  if string.find(body, '"error"%s*:') or string.find(body, '"isError"%s*:%s*true')
      or not string.find(body, '"result"%s*:') or not string.find(body, "SKU-1", 1, true) or not at then
    rpc_errors = rpc_errors + 1
    if not first_error then first_error = "bad answer: " .. string.sub(body, 1, 300) end
    return
  end
  if os.time() - at > max_age then
    stale = stale + 1
  end
  ok = ok + 1
end

local function quote(str)
  str = string.gsub(str, '[%c"\\]', function(c) return string.format("\\u%04x", string.byte(c)) end)
  return '"' .. str .. '"'
end

function done(summary, latency, requests)
  local n_ok, n_status, n_rpc, n_stale, first = 0, 0, 0, 0, nil
  for _, t in ipairs(threads) do
    n_ok = n_ok + (t:get("ok") or 0)
    n_status = n_status + (t:get("bad_status") or 0)
    n_rpc = n_rpc + (t:get("rpc_errors") or 0)
    n_stale = n_stale + (t:get("stale") or 0)
    first = first or t:get("first_error")
  end
  local e = summary.errors
  local out = string.format(
    '{"requests":%d,"duration_us":%d,"ok":%d,"bad_status":%d,"rpc_errors":%d,"stale":%d,' ..
    '"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f},"first_error":%s}',
    summary.requests, summary.duration, n_ok, n_status, n_rpc, n_stale,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    first and quote(first) or "null")
  io.write("@@WRK_JSON " .. out .. "\n")
end
