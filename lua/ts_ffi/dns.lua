-- ts_ffi.dns: host lookups through ATS's HostDB (its hosts file, cache and DNS resolver).
-- lookup() suspends the running coroutine until HostDB answers; it never blocks an ATS
-- thread. Valid in functions registered with ts.hook (their coroutine is the one ts_lua
-- resumes); an error everywhere else (see README, "ts_ffi.dns").

local base = require "ts_ffi.base"
local native, throw, check = base.native, base.throw, base.check
local start = native.dns_lookup
local isyieldable, yield = coroutine.isyieldable, coroutine.yield
local select, type = select, type

local _M = {}

local FNAME = "ts_ffi.dns.lookup"
local NO_YIELD = "cannot yield here (do_remap, do_global_* functions, the TXN_CLOSE hook"
  .. " and script load run under lua_pcall and cannot be suspended; call it from a function"
  .. " registered with ts.hook)"
local NOT_PLUGINS = "cannot yield here (the running coroutine is not the one ts_lua runs"
  .. " ts.hook functions in, but one the script created, a transform or an intercept, and"
  .. " ts_lua would resume the wrong one; call it from the hook function itself)"

-- lookup(name) -> address text (IPv4 or IPv6) | nil, err
function _M.lookup(...)
  local n = select("#", ...)
  if n ~= 1 then
    throw(FNAME, "takes one argument, a host name (got " .. n .. ")", 1)
  end
  local name = ...
  if type(name) ~= "string" then
    throw(FNAME, "expects a host name string (got " .. type(name) .. ")", 1)
  end
  if not (isyieldable and isyieldable()) then
    throw(FNAME, NO_YIELD, 1)
  end
  local v, err = start(name)
  if type(v) == "userdata" then
    -- Pending: HostDB's answer resumes this coroutine with `addr` or `nil, err`, provided
    -- it is suspended yielding this token.
    return yield(v)
  elseif v then
    return v
  elseif v == false then
    return nil, err
  elseif err == "not_resumable" or err == "no_txn" then
    throw(FNAME, NOT_PLUGINS, 1)
  end
  check(FNAME, "TSHostLookup", v, err)
  return nil, err
end

return _M
