-- ts_ffi.txn: the running transaction. Valid wherever ts_lua has a transaction: do_remap,
-- do_global_* hooks, functions registered with ts.hook (TXN_CLOSE included), and coroutines,
-- transforms and intercepts made inside the transaction while its context is alive.

local ffi = require "ffi"
local base = require "ts_ffi.base"
local C, get_ctx, fail, no_args, fast = base.C, base.get_ctx, base.fail, base.no_args, base.fast
local tonumber = tonumber

ffi.cdef [[
int ts_ffi_txn_id(const ts_ffi_ctx *rec, int64_t *out);
int ts_ffi_txn_client_fd(const ts_ffi_ctx *rec, int *out);
]]

local i64 = ffi.new("int64_t[1]")
local int = ffi.new("int[1]")

local _M = {}

_M.id = fast("txn_id", function(...)
  no_args("ts_ffi.txn.id", ...)
  local rc = C.ts_ffi_txn_id(get_ctx("ts_ffi.txn.id"), i64)
  if rc ~= 0 then
    return fail("ts_ffi.txn.id", rc, "TSHttpTxnIdGet")
  end
  return tonumber(i64[0])
end)

_M.client_fd = fast("txn_client_fd", function(...)
  no_args("ts_ffi.txn.client_fd", ...)
  local rc = C.ts_ffi_txn_client_fd(get_ctx("ts_ffi.txn.client_fd"), int)
  if rc ~= 0 then
    return fail("ts_ffi.txn.client_fd", rc, "TSHttpTxnClientFdGet", "client connection is gone")
  end
  return int[0]
end)

return _M
