-- ts_ffi.transform: body transforms.
--
-- response(handler [, opts]) / request(handler [, opts]) register ts_ffi's own transform on
-- the running transaction: handler(data, eos) gets the body in pieces of at least
-- opts.min_chunk bytes (except the last), eos exactly once, and returns what to send on.
--
-- set_watermark / watermark act on the input buffer of the ts_lua transform whose handler is
-- running (registered with ts.hook(TS_LUA_RESPONSE_TRANSFORM, f) or TS_LUA_REQUEST_TRANSFORM);
-- anywhere else they raise.

local base = require "ts_ffi.base"
local native, throw, no_args, describe = base.native, base.throw, base.no_args, base.describe
local next, rawget, type, select = next, rawget, type, select

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

local MAX_CHUNK = native.max_min_chunk
local add = native.transform_add

local function register(fname, is_response, handler, opts, extra)
  if extra ~= nil then
    throw(fname, "takes a handler function and an optional options table", 2)
  end
  if type(handler) ~= "function" then
    throw(fname, "bad handler (a function expected, got " .. describe(handler) .. ")", 2)
  end
  local min_chunk = 0
  if opts ~= nil then
    if type(opts) ~= "table" then
      throw(fname, "bad options (a table expected, got " .. describe(opts) .. ")", 2)
    end
    -- raw access only: an options table's metamethods are not ts_ffi's to run
    for k in next, opts do
      if k ~= "min_chunk" then
        throw(fname, "unknown option " .. describe(k), 2)
      end
    end
    min_chunk = rawget(opts, "min_chunk") or 0
    if type(min_chunk) ~= "number" or min_chunk ~= min_chunk or min_chunk % 1 ~= 0
      or min_chunk < 0 or min_chunk > MAX_CHUNK then
      throw(fname, "bad min_chunk (an integer from 0 to " .. MAX_CHUNK .. " expected, got "
        .. describe(rawget(opts, "min_chunk")) .. ")", 2)
    end
  end
  local ok, code = add(is_response, handler, min_chunk)
  if ok then
    return true
  elseif code == "declined" then
    return nil, "too late: this transaction's " .. (is_response and "response" or "request")
      .. " body has already started"
  end
  base.check(fname, "TSTransformCreate", nil, code)
end

function _M.response(handler, opts, ...)
  return register("ts_ffi.transform.response", true, handler, opts, (...))
end

function _M.request(handler, opts, ...)
  return register("ts_ffi.transform.request", false, handler, opts, (...))
end

return _M
