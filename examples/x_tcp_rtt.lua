-- X-Tcp-Rtt: the kernel's round-trip time estimate for the client connection, in
-- microseconds, added to every response (ts_ffi.tcpinfo.client() reads getsockopt TCP_INFO on
-- the client's socket).
--
--   map http://example.com/ http://origin/ @plugin=tslua.so @pparam=/path/to/x_tcp_rtt.lua
--
-- Where ts_ffi is installed: a LuaRocks tree (`luarocks make --tree DIR ...`). `make demo`
-- passes it as TS_FFI_TREE; in your own scripts write the path.
local tree = os.getenv("TS_FFI_TREE") or "/usr/local"
ts.add_package_path(tree .. "/share/lua/5.1/?.lua")
ts.add_package_cpath(tree .. "/lib/lua/5.1/?.so")

local tcpinfo = require "ts_ffi.tcpinfo"

local function add_rtt()
  -- nil, err when the client has gone already: no header then
  local info = tcpinfo.client()
  if info then
    ts.client_response.header["X-Tcp-Rtt"] = info.rtt         -- µs, smoothed
    ts.client_response.header["X-Tcp-Rttvar"] = info.rttvar   -- µs
  end
end

function do_remap()
  ts.hook(TS_LUA_HOOK_SEND_RESPONSE_HDR, add_rtt)
  return 0
end
