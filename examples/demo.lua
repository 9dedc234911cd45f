-- ts_ffi demo: a remap script that adds what ts_ffi knows about each request to the response.
-- make demo runs it in a sandboxed traffic_server (examples/run_demo.lua).
--
-- Where ts_ffi is installed: a LuaRocks tree (`luarocks make --tree DIR ...`). The demo's
-- runner passes it as TS_FFI_TREE; in your own scripts write the path.
local tree = os.getenv("TS_FFI_TREE") or "/usr/local"
ts.add_package_path(tree .. "/share/lua/5.1/?.lua")
ts.add_package_cpath(tree .. "/lib/lua/5.1/?.so")

local info = require "ts_ffi.info"
local txn = require "ts_ffi.txn"
local ssn = require "ts_ffi.ssn"

-- At load time there is no transaction: ts_ffi says so with an error instead of aborting
-- traffic_server as ts_lua's own calls do.
local ok, load_time_error = pcall(txn.id)

local function add_headers()
  local h = ts.client_response.header
  h["X-Ts-Ffi-Version"] = info.version()
  h["X-Ts-Ffi-Txn-Id"] = txn.id()
  h["X-Ts-Ffi-Ssn-Id"] = ssn.id()
  -- nil, err when the client connection is gone: report the reason instead
  local fd, err = txn.client_fd()
  h["X-Ts-Ffi-Client-Fd"] = fd or err
  h["X-Ts-Ffi-Load-Time"] = ok and "no error?" or load_time_error
end

function do_remap()
  ts.hook(TS_LUA_HOOK_SEND_RESPONSE_HDR, add_headers)
  return 0
end
