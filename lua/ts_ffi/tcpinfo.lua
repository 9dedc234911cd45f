-- ts_ffi.tcpinfo: the kernel's TCP_INFO of the running transaction's client connection
-- (client()) or origin connection (server()), as a table of numbers named as Linux names the
-- fields of struct tcp_info, without the `tcpi_` prefix. Transaction contexts only.

local ffi = require "ffi"
local base = require "ts_ffi.base"
local C, get_ctx, fail, fast = base.C, base.get_ctx, base.fail, base.fast
local throw, describe = base.throw, base.describe
local tonumber, type, select = tonumber, type, select

ffi.cdef [[
struct ts_ffi_tcp_info {
  uint8_t state, ca_state, retransmits, probes, backoff, options;
  uint8_t snd_wscale : 4, rcv_wscale : 4;
  uint8_t delivery_rate_app_limited : 1, fastopen_client_fail : 2;
  uint32_t rto, ato, snd_mss, rcv_mss;
  uint32_t unacked, sacked, lost, retrans, fackets;
  uint32_t last_data_sent, last_ack_sent, last_data_recv, last_ack_recv;
  uint32_t pmtu, rcv_ssthresh, rtt, rttvar, snd_ssthresh, snd_cwnd, advmss, reordering;
  uint32_t rcv_rtt, rcv_space, total_retrans;
  uint64_t pacing_rate, max_pacing_rate, bytes_acked, bytes_received;
  uint32_t segs_out, segs_in, notsent_bytes, min_rtt, data_segs_in, data_segs_out;
  uint64_t delivery_rate, busy_time, rwnd_limited, sndbuf_limited;
  uint32_t delivered, delivered_ce;
  uint64_t bytes_sent, bytes_retrans;
  uint32_t dsack_dups, reord_seen, rcv_ooopack, snd_wnd;
};
int ts_ffi_tcpinfo_get(const ts_ffi_ctx *rec, int which, struct ts_ffi_tcp_info *out, int *len);
]]

local out = ffi.new("struct ts_ffi_tcp_info")
local len = ffi.new("int[1]")
local get = C.ts_ffi_tcpinfo_get

-- Linux errno values a getsockopt(TCP_INFO) on a connection's fd can give.
local errno_text = {
  [9] = "connection is gone (EBADF)",
  [88] = "not a socket (ENOTSOCK)",
  [92] = "not a TCP connection (ENOPROTOOPT)",
  [95] = "not a TCP connection (EOPNOTSUPP)",
}

-- Every field of struct tcp_info in kernel order, with the bytes a kernel must have filled
-- for it (src/tcpinfo.rs FIELDS, the one list; later groups came with Linux 4.2, 4.6, 4.18,
-- 4.19, 5.3 and 5.4).
local FIELDS = base.native.tcpinfo_fields
local NEEDS, FULL = {}, 0
for _, f in ipairs(FIELDS) do
  NEEDS[f.name] = f.min
  if f.min > FULL then FULL = f.min end
end

-- to_table(o, n): the fields the kernel filled (`n` bytes), as Lua numbers (the 64-bit
-- counters through tonumber). Generated from FIELDS as one would write it by hand: one table
-- constructor for current kernels (all FULL bytes, Linux 5.4 and later), which LuaJIT makes
-- from a template of its keys; otherwise the fields every kernel fills and one `if` per later
-- group.
local function make_to_table()
  local function value(name)
    return type(out[name]) == "cdata" and "tonumber(o." .. name .. ")" or "o." .. name
  end
  local all, groups, mins = {}, {}, {}
  for _, f in ipairs(FIELDS) do
    all[#all + 1] = f.name .. " = " .. value(f.name)
    if not groups[f.min] then
      groups[f.min], mins[#mins + 1] = {}, f.min
    end
    local g = groups[f.min]
    g[#g + 1] = f.name
  end
  local function assignments(names, prefix, sep)
    local parts = {}
    for k, name in ipairs(names) do parts[k] = prefix .. name .. " = " .. value(name) end
    return table.concat(parts, sep)
  end
  local src = { "local tonumber = ...", "return function(o, n)",
    "  if n >= " .. FULL .. " then return { " .. table.concat(all, ", ") .. " } end",
    "  local t = { " .. assignments(groups[0], "", ", ") .. " }" }
  for _, min in ipairs(mins) do
    if min > 0 and min < FULL then
      src[#src + 1] = "  if n >= " .. min .. " then " .. assignments(groups[min], "t.", " ") .. " end"
    end
  end
  src[#src + 1] = "  return t\nend"
  return assert(loadstring(table.concat(src, "\n"), "=ts_ffi/tcpinfo.lua to_table"))(tonumber)
end
local to_table = make_to_table()

-- A failed getsockopt or a missing connection: nil, err (or a raised error, base.fail).
local function failed(fname, rc, tsfn, none)
  local n = len[0]
  if n < 0 then
    return fail(fname, rc, tsfn, "getsockopt(TCP_INFO): " .. (errno_text[-n] or ("errno " .. -n)))
  end
  return fail(fname, rc, tsfn, none)
end

local function query(fname, which, tsfn, none)
  local rc = get(get_ctx(fname), which, out, len)
  if rc == 0 then
    return to_table(out, len[0])
  end
  return failed(fname, rc, tsfn, none)
end

-- The field name of a one-argument call; raises for anything else (programming errors).
local function field_arg(fname, nargs, field)
  if nargs ~= 1 then
    throw(fname, "takes no arguments or one field name (got " .. nargs .. ")", 2)
  end
  if type(field) ~= "string" or not NEEDS[field] then
    throw(fname, "unknown field " .. describe(field) .. " (a name of struct tcp_info without "
      .. "tcpi_, e.g. \"rtt\")", 2)
  end
  return field
end

local function query_field(fname, which, tsfn, none, field)
  local rc = get(get_ctx(fname), which, out, len)
  if rc == 0 then
    if len[0] < NEEDS[field] then
      return nil -- this kernel does not fill it
    end
    local v = out[field]
    if type(v) == "cdata" then -- the 64-bit counters
      v = tonumber(v)
    end
    return v
  end
  return failed(fname, rc, tsfn, none)
end

local _M = {}

-- With the JIT off, C closures (src/fast.rs, src/tcpinfo.rs push_table) build the same table
-- natively: interpreted, each cdata field read above costs ~60 ns.
-- client(field) / server(field): that one field, without the table.
_M.client = fast("tcpinfo_client", function(...)
  local nargs = select("#", ...)
  if nargs == 0 then
    return query("ts_ffi.tcpinfo.client", 0, "TSHttpTxnClientFdGet", "client connection is gone")
  end
  return query_field("ts_ffi.tcpinfo.client", 0, "TSHttpTxnClientFdGet",
    "client connection is gone", field_arg("ts_ffi.tcpinfo.client", nargs, ...))
end)

_M.server = fast("tcpinfo_server", function(...)
  local nargs = select("#", ...)
  if nargs == 0 then
    return query("ts_ffi.tcpinfo.server", 1, "TSHttpTxnServerFdGet", "no origin connection")
  end
  return query_field("ts_ffi.tcpinfo.server", 1, "TSHttpTxnServerFdGet",
    "no origin connection", field_arg("ts_ffi.tcpinfo.server", nargs, ...))
end)

return _M
