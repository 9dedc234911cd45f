-- Global script (plugin.config) for foundation_spec.lua: ts_ffi in do_global_* hooks.
local txn = require "ts_ffi.txn"
local ssn = require "ts_ffi.ssn"

local function pair(a, b)
  return tostring(a) .. "/" .. tostring(b)
end

function do_global_read_request()
  ts.client_request.header["X-Global-Read"] = pair(txn.id(), ts.http.id()) .. " "
    .. pair(ssn.id(), ts.http.ssn_id()) .. " " .. pair(txn.client_fd(), ts.http.get_client_fd())
  return 0
end

function do_global_send_response()
  ts.client_response.header["X-Global-Send"] = pair(txn.id(), ts.http.id())
  ts.client_response.header["X-Global-Read"] = ts.client_request.header["X-Global-Read"]
  return 0
end
