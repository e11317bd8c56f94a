-- wrk script: POST one MCP tools/call (or one chat completion) per request and check every answer.
--
-- Environment (read once per wrk thread):
--   BENCH_KIND     mcp (default) or chat: POST /v1/chat/completions carrying `tools` (passthrough:
--                  the scripted LLM answers with a tool call to add(19, 23), which must come back)
--   BENCH_MODEL    chat model name (default "scripted-model")
--   BENCH_ERA      2026-07-28 (default: stateless, params._meta envelope + Mcp-* headers)
--                  or 2025-11-25 (handshake era: needs BENCH_SESSION unless the server is stateless)
--   BENCH_TOOL     tool name (default "add"); called with {"a": 19, "b": 23}, so the answer holds 42
--   BENCH_AUTH     bearer token (optional)
--   BENCH_SESSION  Mcp-Session-Id (optional; handshake era)
--
-- An MCP response counts as ok only if it is HTTP 200, carries a JSON-RPC "result" with the sum
-- 42, and no "error" member nor "isError": true; a chat one only if it is HTTP 200 with the tool
-- call. Everything else is counted (and the first one kept), so errors are reported, never
-- hidden in the throughput. done() prints one JSON line after
-- the marker @@WRK_JSON with the counts and wrk's latency percentiles (microseconds).

local era = os.getenv("BENCH_ERA") or "2026-07-28"
local tool = os.getenv("BENCH_TOOL") or "add"
local auth = os.getenv("BENCH_AUTH")
local session = os.getenv("BENCH_SESSION")

local kind = os.getenv("BENCH_KIND") or "mcp"
local model = os.getenv("BENCH_MODEL") or "scripted-model"

local params = '"name":"' .. tool .. '","arguments":{"a":19,"b":23}'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["Mcp-Protocol-Version"] = era
if era >= "2026" then
  wrk.headers["Mcp-Method"] = "tools/call"
  wrk.headers["Mcp-Name"] = tool
  params = params .. ',"_meta":{"io.modelcontextprotocol/protocolVersion":"' .. era ..
    '","io.modelcontextprotocol/clientCapabilities":{}}'
end
if auth and auth ~= "" then wrk.headers["Authorization"] = "Bearer " .. auth end
if session and session ~= "" then wrk.headers["Mcp-Session-Id"] = session end
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{' .. params .. '}}'
if kind == "chat" then
  wrk.headers["Mcp-Protocol-Version"] = nil
  wrk.headers["Mcp-Method"] = nil
  wrk.headers["Mcp-Name"] = nil
  wrk.headers["Accept"] = "application/json"
  wrk.body = '{"model":"' .. model .. '","messages":[{"role":"user","content":"What is 19 + 23?"}],' ..
    '"tools":[{"type":"function","function":{"name":"add","description":"Add two integers.",' ..
    '"parameters":{"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"integer"}},' ..
    '"required":["a","b"]}}}]}'
end

-- Is a 200 response's body the expected answer?
local function good(body)
  if kind == "chat" then
    return string.find(body, '"finish_reason"%s*:%s*"tool_calls"') and string.find(body, '"name"%s*:%s*"add"')
      and not string.find(body, '"error"%s*:%s*{')
  end
  return not string.find(body, '"error"%s*:') and not string.find(body, '"isError"%s*:%s*true')
    and string.find(body, '"result"%s*:') and string.find(body, "42", 1, true)
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  ok, bad_status, rpc_errors, first_error = 0, 0, 0, nil
end

function response(status, headers, body)
  if status ~= 200 then
    bad_status = bad_status + 1
    if not first_error then first_error = "HTTP " .. status .. ": " .. string.sub(body or "", 1, 300) end
    return
  end
  body = body or ""
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
