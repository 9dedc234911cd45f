-- Remap script for spec/integration/hostile_spec.lua: the hostile matrix (spec/support/
-- hostile.lua) in every context a remap script has. Each run appends one line to
-- $TS_FFI_SANDBOX/hostile.log; the spec checks every expected context reported 0 failures.
-- Paths: /hooks (every ts.hook hook + the response transform), /request_transform (POST),
-- /intercept, /server_intercept,
-- /fetch, /schedule, /kept (a coroutine kept in a global, resumed by later transactions).
local root = debug.getinfo(1, "S").source:match("^@(.*)/spec/integration/scripts/")
package.path = root .. "/spec/?.lua;" .. package.path
local hostile = require "support.hostile"

local report = hostile.report
report("remap:load", "none", { oracle = hostile.ts_lua_oracle(false) })

function __init__()
  report("remap:__init__", "none", { oracle = hostile.ts_lua_oracle(false) })
end

local function txn_run(context)
  return report(context, "txn", { oracle = hostile.ts_lua_oracle(true) })
end

-- Every hook a remap script can register (those before remap never fire there).
local HOOKS = { "CACHE_LOOKUP_COMPLETE", "SEND_REQUEST_HDR", "READ_RESPONSE_HDR",
                "SEND_RESPONSE_HDR", "POST_REMAP", "OS_DNS", "READ_CACHE_HDR", "TXN_CLOSE" }

local function once(context, kind, opts)
  local done = false
  return function(data, eos)
    if not done then
      done = true
      report(context, kind, opts)
    end
    return data, eos
  end
end

local INTERCEPT_RESPONSE = "HTTP/1.0 200 OK\r\nConnection: close\r\nContent-Length: 10\r\n\r\nintercept\n"

local kept -- per VM: a coroutine made by one transaction, resumed by later ones

-- ts_ffi.waf's request body inspection turns on ATS request buffering, which together with
-- a request transform leaves ATS 9.2.9 without a response (README, ts_ffi.waf): the
-- /request_transform POST is protected without it first, so the matrix's protect() calls find
-- it already protected.
local body_less_waf

function do_remap()
  if ts.client_request.get_uri() == "/request_transform" then
    body_less_waf = body_less_waf or assert(require("ts_ffi.waf").new { rules = "SecRuleEngine On" })
    assert(body_less_waf:protect { request_body = false })
  end
  local r = txn_run("remap:do_remap")
  local path = ts.client_request.get_uri()
  if path == "/hooks" then
    for _, h in ipairs(HOOKS) do
      ts.hook(_G["TS_LUA_HOOK_" .. h], function() txn_run("remap:hook:" .. h) end)
    end
    ts.hook(TS_LUA_RESPONSE_TRANSFORM, once("remap:response_transform", "txn",
      { oracle = hostile.ts_lua_oracle(true), ts_lua_transform = true }))
    -- ts_ffi's own transform handler
    require("ts_ffi.transform").response(once("remap:ts_ffi_transform", "txn",
      { oracle = hostile.ts_lua_oracle(true) }))
    -- a coroutine the script creates inside the transaction
    coroutine.wrap(function() txn_run("remap:coroutine") end)()
  elseif path == "/request_transform" then
    -- Not with a response transform in the same transaction: with both, a POST crashes
    -- traffic_server 9.2.9 (ts_lua alone, without ts_ffi; measured).
    ts.hook(TS_LUA_HOOK_SEND_RESPONSE_HDR, function() end) -- keeps the context
    ts.hook(TS_LUA_REQUEST_TRANSFORM, once("remap:request_transform", "txn",
      { oracle = hostile.ts_lua_oracle(true), ts_lua_transform = true }))
  elseif path == "/intercept" or path == "/server_intercept" then
    local name = path:sub(2)
    ts.http[name](function()
      -- the transaction lives until the intercept has answered: its own answers
      report("remap:" .. name, "txn", { oracle = hostile.ts_lua_oracle(true), same_as = r.results })
      ts.say(INTERCEPT_RESPONSE)
    end)
  elseif path == "/fetch" then
    ts.hook(TS_LUA_HOOK_SEND_RESPONSE_HDR, function()
      local res = ts.fetch("http://plain.test/fetched")
      ts.client_response.header["X-Fetch-Status"] = res and res.status
      txn_run("remap:fetch")
    end)
  elseif path == "/schedule" then
    -- one callback while the transaction lives (the hook sleeps), one long after it ended
    ts.hook(TS_LUA_HOOK_SEND_RESPONSE_HDR, function()
      ts.schedule(TS_LUA_THREAD_POOL_NET, 0, function()
        report("remap:schedule", "txn", { same_as = r.results }) -- the hook still sleeps
      end)
      ts.sleep(1)
    end)
    ts.hook(TS_LUA_HOOK_TXN_CLOSE, function()
      ts.schedule(TS_LUA_THREAD_POOL_NET, 1, function()
        report("remap:schedule_after_close", "none") -- ts_lua released the context 1 s ago
      end)
    end)
  elseif path == "/kept" then
    ts.hook(TS_LUA_HOOK_SEND_RESPONSE_HDR, function() end)
    if not kept then
      kept = coroutine.create(function()
        local own = txn_run("remap:kept_owner")
        while true do
          coroutine.yield()
          report("remap:kept_coroutine", "maybe", { same_as = own.results })
        end
      end)
    end
    assert(coroutine.resume(kept))
  end
  return 0
end
