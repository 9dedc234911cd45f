-- ts_ffi.ssn: the client session of the running transaction (same contexts as ts_ffi.txn).

local ffi = require "ffi"
local base = require "ts_ffi.base"
local C, get_ctx, fail, no_args, fast = base.C, base.get_ctx, base.fail, base.no_args, base.fast
local tonumber = tonumber

ffi.cdef [[
int ts_ffi_ssn_id(const ts_ffi_ctx *rec, int64_t *out);
]]

local i64 = ffi.new("int64_t[1]")

local _M = {}

local TxnSsnGet = base.ts_fn("TSHttpTxnSsnGet", "void *(*)(void *)")
local SsnIdGet = base.ts_fn("TSHttpSsnIdGet", "int64_t (*)(void *)")

_M.id = fast("ssn_id", function(...)
  no_args("ts_ffi.ssn.id", ...)
  local rec = get_ctx("ts_ffi.ssn.id")
  if SsnIdGet and TxnSsnGet and rec.alive ~= 0 then -- JIT path (base.ts_fn)
    local txnp = rec.txn_slot[0]
    if txnp ~= nil then
      local ssn = TxnSsnGet(txnp)
      if ssn ~= nil then
        return tonumber(SsnIdGet(ssn))
      end
    end
  end
  local rc = C.ts_ffi_ssn_id(rec, i64)
  if rc ~= 0 then
    return fail("ts_ffi.ssn.id", rc, "TSHttpSsnIdGet", "no client session")
  end
  return tonumber(i64[0])
end)

return _M
