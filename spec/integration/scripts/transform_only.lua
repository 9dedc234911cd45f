-- A script whose only hook is a transform: ts_lua frees the transaction context right after
-- do_remap, while the transform's environment still names it. Every ts_ffi call from the
-- transform must be an error, never another transaction's answer. With "?early=1" the script
-- also calls ts_ffi in do_remap (ts_ffi then holds a record of the context).
local txn = require "ts_ffi.txn"

local function transform(data, eos)
  local ok, v = pcall(txn.id)
  return data .. "[ffi " .. (ok and ("id=" .. tostring(v)) or ("error=" .. tostring(v))) .. "]\n", eos
end

function do_remap()
  if (ts.client_request.get_uri_args() or ""):find("early=1", 1, true) then
    txn.id()
  end
  ts.hook(TS_LUA_RESPONSE_TRANSFORM, transform)
  return 0
end
