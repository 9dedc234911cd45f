-- Global script (plugin.config) for dns_spec.lua: ts_ffi.dns in do_global_* functions (which
-- run under lua_pcall) and in a ts.hook registered from one (a resumable coroutine).
local dns = require "ts_ffi.dns"

local function err_of(f, ...)
  local ok, err = pcall(f, ...)
  return ok and "no error" or tostring(err)
end

local function on_send_response()
  ts.client_response.header["X-Global-Hook-Addr"] = dns.lookup("global.test")
end

function do_global_read_request()
  if ts.client_request.get_uri() == "/errors" then
    ts.hook(TS_LUA_HOOK_SEND_RESPONSE_HDR, on_send_response)
  end
  return 0
end

function do_global_send_response()
  if ts.client_request.get_uri() == "/errors" then
    ts.client_response.header["X-Global-Error"] = err_of(dns.lookup, "v4.test")
  end
  return 0
end
