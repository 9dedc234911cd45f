-- Remap script for spec/integration/dns_spec.lua. Paths:
--   /lookup/<name>    looks <name> up in SEND_RESPONSE_HDR: X-Addr or X-Err (and ts_lua's
--                     ts.host_lookup's answer in X-Ts-Addr with ?ts=1)
--   /req/<name>       looks <name> up in SEND_REQUEST_HDR: X-Req-Addr or X-Req-Err
--   /twice/<a>/<b>    two lookups in a row in SEND_RESPONSE_HDR (X-Addr: "a b")
--   /coroutine/<name> a lookup inside a coroutine the script creates (X-Co)
--   /errors           errors at load time, in do_remap, in TXN_CLOSE (file), a lookup under pcall
--   /schedule         a lookup in a ts.schedule callback ($TS_FFI_SANDBOX/dns_schedule.log)
--   /transform        a lookup in a response transform (appended to the body)
--   /stray            a lookup started without yielding, then ts.sleep(1) (X-Stray)
-- TXN_CLOSE appends "<path> pending=<bool> close_err=<msg>" to $TS_FFI_SANDBOX/dns_close.log.
local dns = require "ts_ffi.dns"

local function err_of(f, ...)
  local ok, err = pcall(f, ...)
  return ok and "no error" or tostring(err)
end

local load_error = err_of(dns.lookup, "v4.test")

local function answer(addr, err)
  return addr, err and ("nil " .. err) or nil
end

local function path()
  return "/" .. (ts.client_request.get_uri():match("^/(.*)") or "")
end

local function send_request()
  local name = path():match("^/req/([^/?]+)")
  if name then
    ts.ctx.pending = true
    ts.ctx.req_addr, ts.ctx.req_err = answer(dns.lookup(name))
    ts.ctx.pending = false
  end
end

local function send_response()
  local h = ts.client_response.header
  local p = path()
  h["X-Remap-Error"] = ts.ctx.remap_error
  h["X-Load-Error"] = load_error
  h["X-Req-Addr"], h["X-Req-Err"] = ts.ctx.req_addr, ts.ctx.req_err
  local name = p:match("^/lookup/([^/?]+)")
  if name then
    ts.ctx.pending = true
    h["X-Addr"], h["X-Err"] = answer(dns.lookup(name))
    ts.ctx.pending = false
    if ts.client_request.get_uri_args() == "ts=1" then
      h["X-Ts-Addr"] = tostring(ts.host_lookup(name))
    end
  end
  local a, b = p:match("^/twice/([^/]+)/([^/?]+)")
  if a then
    h["X-Addr"] = tostring(dns.lookup(a)) .. " " .. tostring(dns.lookup(b))
  end
  name = p:match("^/coroutine/([^/?]+)")
  if name then
    local co = coroutine.create(function() return dns.lookup(name) end)
    local ok, res = coroutine.resume(co)
    h["X-Co"] = tostring(ok) .. " " .. tostring(res)
    -- the hook's own coroutine still works afterwards
    h["X-Addr"] = dns.lookup(name)
  end
  if p == "/stray" then
    -- the native start called without yielding its token (bypassing ts_ffi.dns), then a
    -- ts.sleep: the lookup's answer must not resume the sleeping coroutine
    local token = require("ts_ffi").dns_lookup("stray.test")
    local res = { n = 0 }
    local function collect(...) res = { n = select("#", ...), ... } end
    collect(ts.sleep(1))
    h["X-Stray"] = type(token) .. " sleep_returned=" .. res.n .. " " .. tostring(res[1])
    h["X-Addr"] = dns.lookup("stray.test")
  end
  if p == "/schedule" then
    -- a ts.schedule callback runs in a coroutine of its own; the transaction waits for it
    local log = os.getenv("TS_FFI_SANDBOX") .. "/dns_schedule.log"
    ts.schedule(TS_LUA_THREAD_POOL_NET, 0, function()
      local f = io.open(log, "a")
      f:write(err_of(dns.lookup, "v4.test"), "\n")
      f:close()
    end)
    for _ = 1, 10 do
      local f = io.open(log)
      if f then f:close() break end
      ts.sleep(1)
    end
  end
  if p == "/errors" then
    -- a yield inside a C call boundary (string.gsub's callback) cannot be suspended
    h["X-Gsub-Error"] = err_of(string.gsub, "x", "x", function() return dns.lookup("v4.test") end)
    h["X-Arg-Error"] = err_of(dns.lookup, 1) .. " | " .. err_of(dns.lookup) .. " | "
      .. err_of(dns.lookup, "a", "b")
    h["X-Invalid"] = select(2, dns.lookup(""))
    -- pcall is yieldable in LuaJIT: a lookup inside it works
    local ok, addr = pcall(dns.lookup, "pcall.test")
    h["X-Pcall"] = tostring(ok) .. " " .. tostring(addr)
  end
end

local function txn_close()
  local f = io.open(os.getenv("TS_FFI_SANDBOX") .. "/dns_close.log", "a")
  f:write(path(), " pending=", tostring(ts.ctx.pending), " close_err=",
    err_of(dns.lookup, "v4.test"), "\n")
  f:close()
end

-- a transform runs in a coroutine of its own
local function transform(data, eos)
  if eos ~= 1 and data == "" then return data, eos end
  local marker = ts.ctx.transformed and "" or ("[dns " .. err_of(dns.lookup, "v4.test") .. "]")
  ts.ctx.transformed = true
  return data .. marker, eos
end

function do_remap()
  ts.ctx.remap_error = err_of(dns.lookup, "v4.test")
  if path() == "/transform" then
    ts.hook(TS_LUA_RESPONSE_TRANSFORM, transform)
  end
  ts.hook(TS_LUA_HOOK_SEND_REQUEST_HDR, send_request)
  ts.hook(TS_LUA_HOOK_SEND_RESPONSE_HDR, send_response)
  ts.hook(TS_LUA_HOOK_TXN_CLOSE, txn_close)
  return 0
end
