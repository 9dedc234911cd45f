-- X-Nexthop: tell the client which origin (or parent) served the request.
-- A remap script: map http://example.test/ http://origin/ @plugin=tslua.so @pparam=nexthop.lua
local tree = os.getenv("TS_FFI_TREE") or "/usr/local"
ts.add_package_path(tree .. "/share/lua/5.1/?.lua")
ts.add_package_cpath(tree .. "/lib/lua/5.1/?.so")

local txn = require "ts_ffi.txn"

local function add_nexthop()
  -- nil, err when no next hop was chosen (e.g. an error before connecting)
  local ip, port, family = txn.next_hop_addr()
  if ip then
    ts.client_response.header["X-Nexthop"] = (family == "inet6" and "[" .. ip .. "]" or ip) .. ":" .. port
  end
end

function do_remap()
  ts.hook(TS_LUA_HOOK_SEND_RESPONSE_HDR, add_nexthop)
  return 0
end
