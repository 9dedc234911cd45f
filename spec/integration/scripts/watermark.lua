-- Remap script for the watermark test: the only hook is a ts_lua response transform (so
-- ts_lua has released the transaction context by the time it runs). Each handler call
-- appends what it saw: the watermark before and after set_watermark on the first call.
local transform = require "ts_ffi.transform"

local load_error = select(2, pcall(transform.watermark))

local function handler(data, eos)
  local before = transform.watermark()
  local set = ""
  if not ts.ctx.set then
    set = " set=" .. tostring(transform.set_watermark(65536)) .. " remap_error=<"
      .. ts.ctx.remap_error .. "> load_error=<" .. load_error .. ">"
    ts.ctx.set = true
  end
  return data .. "[wm before=" .. tostring(before) .. set .. " after=" .. tostring(transform.watermark()) .. "]\n", eos
end

function do_remap()
  ts.ctx.remap_error = select(2, pcall(transform.watermark))
  ts.hook(TS_LUA_RESPONSE_TRANSFORM, handler)
  return 0
end
