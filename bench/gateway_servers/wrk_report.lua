-- What the checking wrk scripts share (calls.lua here, ../scale_servers/agent.lua): every answer
-- counted as ok, bad HTTP status or bad answer (the first bad one kept), and done()'s one JSON
-- line after the marker @@WRK_JSON with the counts and wrk's latency percentiles (microseconds).
--
-- Use: local report = dofile(<this file's path>); report.install(good), where good(body) says
-- whether a 200 response's body is the expected answer. install() defines wrk's global setup,
-- init, response and done (wrk loads the script once per thread and once more for setup/done).

local M = {}

local function quote(s)
  s = string.gsub(s, '[%c"\\]', function(c) return string.format("\\u%04x", string.byte(c)) end)
  return '"' .. s .. '"'
end

function M.install(good)
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
end

return M
