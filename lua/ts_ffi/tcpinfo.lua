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

-- The fields the kernel filled (`n` bytes; older kernels fill fewer), as Lua numbers.
-- Every kernel fills up to total_retrans (Linux 2.6); later groups as `n` allows. The common
-- case (Linux >= 5.4 fills all 232 bytes) is one table constructor.
local function base_fields(o)
  return {
    state = o.state, ca_state = o.ca_state, retransmits = o.retransmits, probes = o.probes,
    backoff = o.backoff, options = o.options, snd_wscale = o.snd_wscale,
    rcv_wscale = o.rcv_wscale, delivery_rate_app_limited = o.delivery_rate_app_limited,
    fastopen_client_fail = o.fastopen_client_fail, rto = o.rto, ato = o.ato,
    snd_mss = o.snd_mss, rcv_mss = o.rcv_mss, unacked = o.unacked, sacked = o.sacked,
    lost = o.lost, retrans = o.retrans, fackets = o.fackets,
    last_data_sent = o.last_data_sent, last_ack_sent = o.last_ack_sent,
    last_data_recv = o.last_data_recv, last_ack_recv = o.last_ack_recv, pmtu = o.pmtu,
    rcv_ssthresh = o.rcv_ssthresh, rtt = o.rtt, rttvar = o.rttvar,
    snd_ssthresh = o.snd_ssthresh, snd_cwnd = o.snd_cwnd, advmss = o.advmss,
    reordering = o.reordering, rcv_rtt = o.rcv_rtt, rcv_space = o.rcv_space,
    total_retrans = o.total_retrans,
  }
end

local function to_table(o, n)
  if n >= 232 then -- Linux 5.4 and later
    return {
      state = o.state, ca_state = o.ca_state, retransmits = o.retransmits, probes = o.probes,
      backoff = o.backoff, options = o.options, snd_wscale = o.snd_wscale,
      rcv_wscale = o.rcv_wscale, delivery_rate_app_limited = o.delivery_rate_app_limited,
      fastopen_client_fail = o.fastopen_client_fail, rto = o.rto, ato = o.ato,
      snd_mss = o.snd_mss, rcv_mss = o.rcv_mss, unacked = o.unacked, sacked = o.sacked,
      lost = o.lost, retrans = o.retrans, fackets = o.fackets,
      last_data_sent = o.last_data_sent, last_ack_sent = o.last_ack_sent,
      last_data_recv = o.last_data_recv, last_ack_recv = o.last_ack_recv, pmtu = o.pmtu,
      rcv_ssthresh = o.rcv_ssthresh, rtt = o.rtt, rttvar = o.rttvar,
      snd_ssthresh = o.snd_ssthresh, snd_cwnd = o.snd_cwnd, advmss = o.advmss,
      reordering = o.reordering, rcv_rtt = o.rcv_rtt, rcv_space = o.rcv_space,
      total_retrans = o.total_retrans,
      pacing_rate = tonumber(o.pacing_rate), max_pacing_rate = tonumber(o.max_pacing_rate),
      bytes_acked = tonumber(o.bytes_acked), bytes_received = tonumber(o.bytes_received),
      segs_out = o.segs_out, segs_in = o.segs_in, notsent_bytes = o.notsent_bytes,
      min_rtt = o.min_rtt, data_segs_in = o.data_segs_in, data_segs_out = o.data_segs_out,
      delivery_rate = tonumber(o.delivery_rate), busy_time = tonumber(o.busy_time),
      rwnd_limited = tonumber(o.rwnd_limited), sndbuf_limited = tonumber(o.sndbuf_limited),
      delivered = o.delivered, delivered_ce = o.delivered_ce,
      bytes_sent = tonumber(o.bytes_sent), bytes_retrans = tonumber(o.bytes_retrans),
      dsack_dups = o.dsack_dups, reord_seen = o.reord_seen, rcv_ooopack = o.rcv_ooopack,
      snd_wnd = o.snd_wnd,
    }
  end
  local t = base_fields(o)
  if n >= 144 then -- Linux 4.2
    t.pacing_rate, t.max_pacing_rate = tonumber(o.pacing_rate), tonumber(o.max_pacing_rate)
    t.bytes_acked, t.bytes_received = tonumber(o.bytes_acked), tonumber(o.bytes_received)
    t.segs_out, t.segs_in = o.segs_out, o.segs_in
  end
  if n >= 160 then -- Linux 4.6
    t.notsent_bytes, t.min_rtt = o.notsent_bytes, o.min_rtt
    t.data_segs_in, t.data_segs_out = o.data_segs_in, o.data_segs_out
  end
  if n >= 200 then -- Linux 4.18
    t.delivery_rate = tonumber(o.delivery_rate)
    t.busy_time, t.rwnd_limited = tonumber(o.busy_time), tonumber(o.rwnd_limited)
    t.sndbuf_limited = tonumber(o.sndbuf_limited)
    t.delivered, t.delivered_ce = o.delivered, o.delivered_ce
  end
  if n >= 216 then -- Linux 4.19
    t.bytes_sent, t.bytes_retrans = tonumber(o.bytes_sent), tonumber(o.bytes_retrans)
  end
  if n >= 224 then -- Linux 5.3
    t.dsack_dups, t.reord_seen = o.dsack_dups, o.reord_seen
  end
  return t
end
local function query(fname, which, tsfn, none)
  local rc = get(get_ctx(fname), which, out, len)
  if rc == 0 then
    return to_table(out, len[0])
  end
  local n = len[0]
  if n < 0 then
    return fail(fname, rc, tsfn, "getsockopt(TCP_INFO): " .. (errno_text[-n] or ("errno " .. -n)))
  end
  return fail(fname, rc, tsfn, none)
end

-- One field instead of the table (client("rtt")): the bytes the kernel must have filled for
-- each name, the same groups as to_table.
local GROUPS = {
  [0] = { "state", "ca_state", "retransmits", "probes", "backoff", "options", "snd_wscale",
    "rcv_wscale", "delivery_rate_app_limited", "fastopen_client_fail", "rto", "ato", "snd_mss",
    "rcv_mss", "unacked", "sacked", "lost", "retrans", "fackets", "last_data_sent",
    "last_ack_sent", "last_data_recv", "last_ack_recv", "pmtu", "rcv_ssthresh", "rtt", "rttvar",
    "snd_ssthresh", "snd_cwnd", "advmss", "reordering", "rcv_rtt", "rcv_space", "total_retrans" },
  [144] = { "pacing_rate", "max_pacing_rate", "bytes_acked", "bytes_received", "segs_out",
    "segs_in" },
  [160] = { "notsent_bytes", "min_rtt", "data_segs_in", "data_segs_out" },
  [200] = { "delivery_rate", "busy_time", "rwnd_limited", "sndbuf_limited", "delivered",
    "delivered_ce" },
  [216] = { "bytes_sent", "bytes_retrans" },
  [224] = { "dsack_dups", "reord_seen" },
  [232] = { "rcv_ooopack", "snd_wnd" },
}
local NEEDS = {}
for n, names in pairs(GROUPS) do
  for _, k in ipairs(names) do NEEDS[k] = n end
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
  local n = len[0]
  if n < 0 then
    return fail(fname, rc, tsfn, "getsockopt(TCP_INFO): " .. (errno_text[-n] or ("errno " .. -n)))
  end
  return fail(fname, rc, tsfn, none)
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
