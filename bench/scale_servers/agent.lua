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

-- Counting and the @@WRK_JSON report: the same as gateway_servers/calls.lua's.
local here = string.match(debug.getinfo(1, "S").source, "^@(.*/)") or "./"
dofile(here .. "../gateway_servers/wrk_report.lua").install(good)
