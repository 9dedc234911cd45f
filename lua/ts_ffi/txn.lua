-- ts_ffi.txn: the running transaction. Valid wherever ts_lua has a transaction: do_remap,
-- do_global_* hooks, functions registered with ts.hook (TXN_CLOSE included), and coroutines,
-- transforms and intercepts made inside the transaction while its context is alive.

local ffi = require "ffi"
local base = require "ts_ffi.base"
local C, get_ctx, fail, no_args, throw, fast = base.C, base.get_ctx, base.fail, base.no_args,
  base.throw, base.fast
local select, tonumber, type, ffi_string = select, tonumber, type, ffi.string

ffi.cdef [[
int ts_ffi_txn_id(const ts_ffi_ctx *rec, int64_t *out);
int ts_ffi_txn_client_fd(const ts_ffi_ctx *rec, int *out);
int ts_ffi_txn_server_fd(const ts_ffi_ctx *rec, int *out);
int ts_ffi_txn_is_aborted(const ts_ffi_ctx *rec, int *out);
int ts_ffi_txn_next_hop_addr(const ts_ffi_ctx *rec, char *ip, size_t ip_len, int *text_len,
  int *port, int *family);
int ts_ffi_txn_remap_url(const ts_ffi_ctx *rec, int which, char **out, int *len);
int ts_ffi_txn_set_outgoing_addr(const ts_ffi_ctx *rec, const char *ip, size_t ip_len, int port);
int ts_ffi_txn_clear_outgoing_addr(const ts_ffi_ctx *rec);
void ts_ffi_free(void *p);
]]

local i64 = ffi.new("int64_t[1]")
local int = ffi.new("int[1]")
local int2 = ffi.new("int[1]")
local int3 = ffi.new("int[1]")
local str = ffi.new("char *[1]")
local ipbuf = ffi.new("char[64]")

local _M = {}

local TxnIdGet = base.ts_fn("TSHttpTxnIdGet", "uint64_t (*)(void *)")

_M.id = fast("txn_id", function(...)
  no_args("ts_ffi.txn.id", ...)
  local rec = get_ctx("ts_ffi.txn.id")
  if TxnIdGet and rec.alive ~= 0 then -- JIT path (base.ts_fn)
    local txnp = rec.txn_slot[0]
    if txnp ~= nil then
      return tonumber(TxnIdGet(txnp))
    end
  end
  local rc = C.ts_ffi_txn_id(rec, i64)
  if rc ~= 0 then
    return fail("ts_ffi.txn.id", rc, "TSHttpTxnIdGet")
  end
  return tonumber(i64[0])
end)

local TxnSsnGet = base.ts_fn("TSHttpTxnSsnGet", "void *(*)(void *)")
local ClientFdGet = base.ts_fn("TSHttpTxnClientFdGet", "int (*)(void *, int *)")

_M.client_fd = fast("txn_client_fd", function(...)
  no_args("ts_ffi.txn.client_fd", ...)
  local rec = get_ctx("ts_ffi.txn.client_fd")
  if TxnSsnGet and ClientFdGet and rec.alive ~= 0 then -- JIT path (base.ts_fn)
    local txnp = rec.txn_slot[0]
    -- as src/txn.rs client_fd: ATS reads the client session without checking it
    if txnp ~= nil and TxnSsnGet(txnp) ~= nil and ClientFdGet(txnp, int) == 0 and int[0] >= 0 then
      return int[0]
    end
  end
  local rc = C.ts_ffi_txn_client_fd(rec, int)
  if rc ~= 0 then
    return fail("ts_ffi.txn.client_fd", rc, "TSHttpTxnClientFdGet", "client connection is gone")
  end
  return int[0]
end)

local ServerFdGet = base.ts_fn("TSHttpTxnServerFdGet", "int (*)(void *, int *)")

_M.server_fd = fast("txn_server_fd", function(...)
  no_args("ts_ffi.txn.server_fd", ...)
  local rec = get_ctx("ts_ffi.txn.server_fd")
  if ServerFdGet and rec.alive ~= 0 then -- JIT path (base.ts_fn)
    local txnp = rec.txn_slot[0]
    if txnp ~= nil and ServerFdGet(txnp, int) == 0 and int[0] >= 0 then
      return int[0]
    end
  end
  local rc = C.ts_ffi_txn_server_fd(rec, int)
  if rc ~= 0 then
    return fail("ts_ffi.txn.server_fd", rc, "TSHttpTxnServerFdGet", "no origin connection")
  end
  return int[0]
end)

-- TSHttpTxnAborted gains an argument in ATS 10: the one-argument call only on 9.x.
local TxnAborted = base.native.info_version_number() == 9
  and base.ts_fn("TSHttpTxnAborted", "int (*)(void *)") or nil

_M.is_aborted = fast("txn_is_aborted", function(...)
  no_args("ts_ffi.txn.is_aborted", ...)
  local rec = get_ctx("ts_ffi.txn.is_aborted")
  if TxnAborted and rec.alive ~= 0 then -- JIT path (base.ts_fn); TS_SUCCESS (0): aborted
    local txnp = rec.txn_slot[0]
    if txnp ~= nil then
      return TxnAborted(txnp) == 0
    end
  end
  local rc = C.ts_ffi_txn_is_aborted(rec, int)
  if rc ~= 0 then
    return fail("ts_ffi.txn.is_aborted", rc, "TSHttpTxnAborted")
  end
  return int[0] == 1
end)

_M.next_hop_addr = fast("txn_next_hop_addr", function(...)
  no_args("ts_ffi.txn.next_hop_addr", ...)
  local rc = C.ts_ffi_txn_next_hop_addr(get_ctx("ts_ffi.txn.next_hop_addr"), ipbuf, 64, int3, int,
    int2)
  if rc ~= 0 then
    return fail("ts_ffi.txn.next_hop_addr", rc, "TSHttpTxnNextHopAddrGet", "no next hop chosen yet")
  end
  return ffi_string(ipbuf, int3[0]), int[0], int2[0] == 4 and "inet" or "inet6"
end)

local RemapFromUrlGet = base.ts_fn("TSRemapFromUrlGet", "int (*)(void *, void **)")
local RemapToUrlGet = base.ts_fn("TSRemapToUrlGet", "int (*)(void *, void **)")
local UrlStringGet = base.ts_fn("TSUrlStringGet", "char *(*)(void *, void *, int *)")
local TSfree = base.ts_fn("_TSfree", "void (*)(void *)")
local loc = ffi.new("void *[1]")

-- The flat function's answer (every case, errors included) for the rule's URL.
local function remap_url(fname, which, tsfn, rec)
  local rc = C.ts_ffi_txn_remap_url(rec, which, str, int)
  if rc ~= 0 then
    return fail(fname, rc, tsfn, "no remap rule matched")
  end
  local url = ffi_string(str[0], int[0])
  C.ts_ffi_free(str[0])
  return url
end

-- The JIT path (base.ts_fn), as src/txn.rs remap_url: the rule's URL, printed by ATS (bufp
-- may be NULL in 9.2). Written out in each function: a helper shared by both, called with
-- either TS* function, gets a trace specialized to one of them, which the other's calls
-- leave on every call (measured: a loop of either then sometimes costs 2x).
local JIT_URLS = UrlStringGet and TSfree

_M.remap_from_url = fast("txn_remap_from_url", function(...)
  no_args("ts_ffi.txn.remap_from_url", ...)
  local rec = get_ctx("ts_ffi.txn.remap_from_url")
  if JIT_URLS and RemapFromUrlGet and rec.alive ~= 0 then
    local txnp = rec.txn_slot[0]
    if txnp ~= nil and RemapFromUrlGet(txnp, loc) == 0 and loc[0] ~= nil then
      local s = UrlStringGet(nil, loc[0], int)
      if s ~= nil then
        local url = int[0] >= 0 and ffi_string(s, int[0])
        TSfree(s)
        if url then return url end
      end
    end
  end
  return remap_url("ts_ffi.txn.remap_from_url", 0, "TSRemapFromUrlGet", rec)
end)

_M.remap_to_url = fast("txn_remap_to_url", function(...)
  no_args("ts_ffi.txn.remap_to_url", ...)
  local rec = get_ctx("ts_ffi.txn.remap_to_url")
  if JIT_URLS and RemapToUrlGet and rec.alive ~= 0 then
    local txnp = rec.txn_slot[0]
    if txnp ~= nil and RemapToUrlGet(txnp, loc) == 0 and loc[0] ~= nil then
      local s = UrlStringGet(nil, loc[0], int)
      if s ~= nil then
        local url = int[0] >= 0 and ffi_string(s, int[0])
        TSfree(s)
        if url then return url end
      end
    end
  end
  return remap_url("ts_ffi.txn.remap_to_url", 1, "TSRemapToUrlGet", rec)
end)

local TOO_LATE = "too late: the origin connection exists or the client has gone"

function _M.set_outgoing_addr(ip, port, ...)
  local fname = "ts_ffi.txn.set_outgoing_addr"
  if select("#", ...) ~= 0 then
    throw(fname, "takes an address and an optional port", 1)
  end
  if type(ip) ~= "string" or #ip > 63 then
    throw(fname, "bad address (an IPv4 or IPv6 address string expected, got "
      .. base.describe(ip) .. ")", 1)
  end
  if port == nil then
    port = 0
  elseif type(port) ~= "number" or port ~= port or port % 1 ~= 0 or port < 0 or port > 65535 then
    throw(fname, "bad port (an integer from 0 to 65535 expected, got " .. base.describe(port) .. ")", 1)
  end
  local rc = C.ts_ffi_txn_set_outgoing_addr(get_ctx(fname), ip, #ip, port)
  if rc == base.codes.bad_arg then
    throw(fname, "bad address (an IPv4 or IPv6 address string expected, got "
      .. base.describe(ip) .. ")", 1)
  elseif rc ~= 0 then
    return fail(fname, rc, "TSHttpTxnOutgoingAddrSet", TOO_LATE)
  end
  return true
end

function _M.clear_outgoing_addr(...)
  no_args("ts_ffi.txn.clear_outgoing_addr", ...)
  local rc = C.ts_ffi_txn_clear_outgoing_addr(get_ctx("ts_ffi.txn.clear_outgoing_addr"))
  if rc ~= 0 then
    return fail("ts_ffi.txn.clear_outgoing_addr", rc, "TSHttpTxnOutgoingAddrSet", TOO_LATE)
  end
  return true
end

return _M
