-- wrk script of `bench scale`: POST one /v1/chat/completions agent run (no `tools` in the
-- request, so the gateway's agent runtime answers: model -> one tool call add(19, 23) -> model)
-- and check every answer.
--
-- Environment: BENCH_MODEL (model name, default "scripted-model"), BENCH_AUTH (bearer token).
-- A response counts as ok only if it is HTTP 200 with a completed run whose answer holds 42 and
-- one tool call that succeeded; everything else is counted (the first kept). done() prints one
-- JSON line after @@WRK_JSON, the same fields as gateway_servers/calls.lua.

local model = os.getenv("BENCH_MODEL") or "scripted-model"
local auth = os.getenv("BENCH_AUTH")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"
if auth and auth ~= "" then wrk.headers["Authorization"] = "Bearer " .. auth end
wrk.body = '{"model":"' .. model .. '","user":"bench",' ..
  '"messages":[{"role":"user","content":"What is 19 + 23?"}]}'

local function good(body)
  return string.find(body, '"status"%s*:%s*"completed"') and string.find(body, "42", 1, true)
    and string.find(body, '"status"%s*:%s*"ok"') and not string.find(body, '"error"%s*:%s*{')
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  ok, bad_status, rpc_errors, first_error = 0, 0, 0, nil
end

function response(status, headers, body)
  body = body or ""
  if status ~= 200 then
    bad_status = bad_status + 1
    if not first_error then first_error = "HTTP " .. status .. ": " .. string.sub(body, 1, 300) end
    return
  end
  if not good(body) then
    rpc_errors = rpc_errors + 1
    if not first_error then first_error = "bad answer: " .. string.sub(body, 1, 300) end
    return
  end
  ok = ok + 1
end

local function quote(s)
  s = string.gsub(s, '[%c"\\]', function(c) return string.format("\\u%04x", string.byte(c)) end)
  return '"' .. s .. '"'
end

function done(summary, latency, requests)
  local n_ok, n_status, n_rpc, first = 0, 0, 0, nil
  for _, t in ipairs(threads) do
    n_ok = n_ok + (t:get("ok") or 0)
    n_status = n_status + (t:get("bad_status") or 0)
    n_rpc = n_rpc + (t:get("rpc_errors") or 0)
    first = first or t:get("first_error")
  end
  local e = summary.errors
  local out = string.format(
    '{"requests":%d,"duration_us":%d,"ok":%d,"bad_status":%d,"rpc_errors":%d,' ..
    '"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f},"first_error":%s}',
    summary.requests, summary.duration, n_ok, n_status, n_rpc,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    first and quote(first) or "null")
  io.write("@@WRK_JSON " .. out .. "\n")
end
