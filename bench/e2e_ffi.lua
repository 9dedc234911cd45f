-- End-to-end bench script, ts_ffi version: the per-request work of bench/e2e_ts_lua.lua,
-- done with ts_ffi (same calls, same hooks, same header).
local txn = require "ts_ffi.txn"
local ssn = require "ts_ffi.ssn"

local function send_response()
  ts.client_response.header["X-Ids"] = txn.id() .. "/" .. ssn.id() .. "/" .. txn.client_fd()
end

function do_remap()
  local _ = txn.id() + ssn.id() + txn.client_fd()
  ts.hook(TS_LUA_HOOK_SEND_RESPONSE_HDR, send_response)
  return 0
end
