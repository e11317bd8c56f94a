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
-- hidden in the throughput. done() prints one JSON line after the marker @@WRK_JSON with the
-- counts and wrk's latency percentiles (microseconds): see wrk_report.lua.

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

-- Counting and the @@WRK_JSON report: shared with ../scale_servers/agent.lua.
local here = string.match(debug.getinfo(1, "S").source, "^@(.*/)") or "./"
dofile(here .. "wrk_report.lua").install(good)
