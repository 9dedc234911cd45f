-- Like transform_only.lua, but with a ts.hook registered: ts_lua keeps the context until
-- TXN_CLOSE, so the transform's ts_ffi answers are the transaction's own.
local txn = require "ts_ffi.txn"

local function transform(data, eos)
  local ok, v = pcall(txn.id)
  return data .. "[ffi " .. (ok and ("id=" .. tostring(v)) or ("error=" .. tostring(v)))
    .. " remap=" .. tostring(ts.ctx.remap_id) .. "]\n", eos
end

function do_remap()
  ts.ctx.remap_id = ts.http.id()
  ts.hook(TS_LUA_HOOK_SEND_RESPONSE_HDR, function() end)
  ts.hook(TS_LUA_RESPONSE_TRANSFORM, transform)
  return 0
end
