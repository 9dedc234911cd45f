-- A script whose only hook is a transform: ts_lua frees the transaction context right after
-- do_remap, while the transform's environment still names it. Every ts_ffi call from the
-- transform must be an error, never another transaction's answer. With "?early=1" the script
-- also calls ts_ffi in do_remap (ts_ffi then holds a record of the context). With
-- "?hostile=1" the transform's first call also runs the hostile matrix (spec/support/
-- hostile.lua) as a context without a transaction (hostile_spec.lua).
local txn = require "ts_ffi.txn"
local root = debug.getinfo(1, "S").source:match("^@(.*)/spec/integration/scripts/")
package.path = root .. "/spec/?.lua;" .. package.path
local hostile = require "support.hostile"
hostile.report("transform_only:load", "none")

local function transform(data, eos)
  local ok, v = pcall(txn.id)
  return data .. "[ffi " .. (ok and ("id=" .. tostring(v)) or ("error=" .. tostring(v))) .. "]\n", eos
end

function do_remap()
  local args = ts.client_request.get_uri_args() or ""
  if args:find("early=1", 1, true) then
    txn.id()
  end
  if args:find("hostile=1", 1, true) then
    local first = true
    ts.hook(TS_LUA_RESPONSE_TRANSFORM, function(data, eos)
      if first then
        first = false
        hostile.report("transform_only:transform", "none", { ts_lua_transform = true })
      end
      return transform(data, eos)
    end)
    return 0
  end
  ts.hook(TS_LUA_RESPONSE_TRANSFORM, transform)
  return 0
end
