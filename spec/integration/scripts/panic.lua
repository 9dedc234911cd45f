-- Remap script for spec/integration/panic_spec.lua, run with the panic-test build of
-- ts_ffi.so (make panic-build): triggers a Rust panic on each kind of entry point inside
-- traffic_server and returns what Lua got back as response headers.
local ffi = require "ffi"
local base = require "ts_ffi.base"
local txn = require "ts_ffi.txn"
local native = base.native

ffi.cdef "int ts_ffi_test_panic(const ts_ffi_ctx *rec, int64_t *out);"
local out = ffi.new("int64_t[1]")

local function flat()
  local rc = base.C.ts_ffi_test_panic(base.get_ctx("ts_ffi.test.flat"), out)
  if rc ~= 0 then return base.fail("ts_ffi.test.flat", rc) end
  return tonumber(out[0])
end

local function err_of(f)
  local ok, err = pcall(f)
  return ok and "no error" or tostring(err)
end

function do_remap()
  ts.ctx.flat = err_of(flat)
  ts.ctx.native = err_of(function() return base.check("ts_ffi.test.native", nil, native.test_panic_native()) end)
  ts.ctx.callback = err_of(native.test_panic_callback)
  ts.hook(TS_LUA_HOOK_SEND_RESPONSE_HDR, function()
    local h = ts.client_response.header
    h["X-Flat"], h["X-Native"], h["X-Callback"] = ts.ctx.flat, ts.ctx.native, ts.ctx.callback
    h["X-Id"] = txn.id() .. "/" .. ts.http.id()
  end)
  return 0
end
