-- Run by spec/unit/panic_spec.lua in a subprocess, with LUA_CPATH naming the panic-test
-- build of ts_ffi.so (make panic-build) and the ATS double loaded: triggers a Rust panic on
-- each kind of entry point and prints what Lua got back, then shows the module still works.
local double = require "support.double"
local ffi = require "ffi"
local base = require "ts_ffi.base"
local native = base.native
assert(native.test_panic_native, "not a panic-test build of ts_ffi.so")

ffi.cdef "int ts_ffi_test_panic(const ts_ffi_ctx *rec, int64_t *out);"
local out = ffi.new("int64_t[1]")

-- shaped like a public function: flat call, code, base.fail
local function flat()
  local rc = base.C.ts_ffi_test_panic(nil, out)
  if rc ~= 0 then return base.fail("ts_ffi.test.flat", rc) end
  return tonumber(out[0])
end
local function answered()
  return base.check("ts_ffi.test.native", nil, native.test_panic_native())
end

for _, case in ipairs { { "flat", flat }, { "native", answered },
                        { "callback", native.test_panic_callback } } do
  local ok, err = pcall(case[2])
  print(case[1] .. "\t" .. tostring(ok) .. "\t" .. tostring(err))
end
print("after\t" .. tostring(double.in_txn(require("ts_ffi.txn").id)))
