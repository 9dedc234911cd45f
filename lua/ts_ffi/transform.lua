-- ts_ffi.transform: body transforms.
--
-- set_watermark / watermark act on the input buffer of the ts_lua transform whose handler is
-- running (registered with ts.hook(TS_LUA_RESPONSE_TRANSFORM, f) or TS_LUA_REQUEST_TRANSFORM);
-- anywhere else they raise.

local base = require "ts_ffi.base"
local native, throw, no_args, describe = base.native, base.throw, base.no_args, base.describe
local type, select = type, select

local _M = {}

local NOT_HERE = "not inside a ts_lua transform handler (TS_LUA_RESPONSE_TRANSFORM or"
  .. " TS_LUA_REQUEST_TRANSFORM)"

local function answer(fname, tsfn, v, code)
  if v ~= nil then
    return v
  elseif code == "declined" then
    return nil, "the transform has no input buffer"
  elseif code == "no_txn" then
    throw(fname, NOT_HERE, 2)
  end
  base.check(fname, tsfn, v, code)
end

function _M.watermark(...)
  no_args("ts_ffi.transform.watermark", ...)
  return answer("ts_ffi.transform.watermark", "TSIOBufferWaterMarkGet", native.transform_watermark())
end

local MAX = native.max_watermark

function _M.set_watermark(bytes, ...)
  local fname = "ts_ffi.transform.set_watermark"
  if select("#", ...) ~= 0 then
    throw(fname, "takes one argument, a byte count", 1)
  end
  if type(bytes) ~= "number" or bytes ~= bytes or bytes % 1 ~= 0 or bytes < 0 or bytes > MAX then
    throw(fname, "bad byte count (an integer from 0 to " .. MAX .. " expected, got "
      .. describe(bytes) .. ")", 1)
  end
  local v, code = native.transform_watermark(bytes)
  return answer(fname, "TSIOBufferWaterMarkSet", v, code)
end

return _M
