-- Remap script for `make bench` (bench/run.lua): times one hot function per request inside
-- traffic_server. GET /m?case=<name>&variant=ffi|ts_lua|raw&n=<calls>[&jitv=<file>]
-- answers X-Bench: "ns=<per call> last=<last result>" (or X-Bench-Error). The loop runs in a
-- ts.hook handler (READ_RESPONSE_HDR) or in do_remap, as bench/cases.lua says.
-- With TS_FFI_BENCH_JIT=0 in traffic_server's environment the JIT is off in every VM before
-- ts_ffi is loaded, so ts_ffi picks its interpreted path.
local jit = require "jit"
if os.getenv("TS_FFI_BENCH_JIT") == "0" then
  jit.off()
  jit.flush()
end

local ffi = require "ffi"
local here = debug.getinfo(1, "S").source:sub(2):match("^(.*)/")
local CASES = dofile(here .. "/cases.lua")

pcall(ffi.cdef, [[
typedef struct { long tv_sec; long tv_nsec; } ts_ffi_bench_timespec;
int clock_gettime(int clk, ts_ffi_bench_timespec *tp);
uint64_t TSHttpTxnIdGet(void *txnp);
int TSHttpTxnClientFdGet(void *txnp, int *fdp);
int TSHttpTxnServerFdGet(void *txnp, int *fdp);
void *TSHttpTxnSsnGet(void *txnp);
int64_t TSHttpSsnIdGet(void *ssnp);
int TSHttpTxnAborted(void *txnp);
const struct ts_ffi_bench_sockaddr *TSHttpTxnNextHopAddrGet(void *txnp);
int TSHttpTxnClientReqGet(void *txnp, void **bufp, void **locp);
int TSRemapFromUrlGet(void *txnp, void **locp);
int TSRemapToUrlGet(void *txnp, void **locp);
char *TSUrlStringGet(void *bufp, void *loc, int *len);
void _TSfree(void *p);
struct ts_ffi_bench_sockaddr { uint16_t family; uint8_t port[2]; uint8_t addr[4]; uint8_t pad[112]; };
const char *inet_ntop(int af, const void *src, char *dst, unsigned int size);
int getsockopt(int fd, int level, int name, void *val, unsigned int *len);
]])
-- What a script would declare by hand for getsockopt(TCP_INFO): the classic fields, the rest
-- of Linux 5.4+'s 232 bytes as padding.
pcall(ffi.cdef, [[
struct ts_ffi_bench_tcp_info {
  uint8_t state, ca_state, retransmits, probes, backoff, options, wscale, flags;
  uint32_t rto, ato, snd_mss, rcv_mss, unacked, sacked, lost, retrans, fackets;
  uint32_t last_data_sent, last_ack_sent, last_data_recv, last_ack_recv;
  uint32_t pmtu, rcv_ssthresh, rtt, rttvar, snd_ssthresh, snd_cwnd, advmss, reordering;
  uint32_t rcv_rtt, rcv_space, total_retrans;
  uint8_t rest[128];
};
]])
-- Every field of Linux 5.4+'s struct tcp_info (<linux/tcp.h>), for the full-table row, and
-- the table a script would build of it: the names and values ts_ffi.tcpinfo answers, every
-- value a Lua number, each kernel version's fields only when the kernel filled them.
pcall(ffi.cdef, [[
struct ts_ffi_bench_tcp_info_full {
  uint8_t tcpi_state, tcpi_ca_state, tcpi_retransmits, tcpi_probes, tcpi_backoff, tcpi_options;
  uint8_t tcpi_snd_wscale : 4, tcpi_rcv_wscale : 4;
  uint8_t tcpi_delivery_rate_app_limited : 1, tcpi_fastopen_client_fail : 2;
  uint32_t tcpi_rto, tcpi_ato, tcpi_snd_mss, tcpi_rcv_mss;
  uint32_t tcpi_unacked, tcpi_sacked, tcpi_lost, tcpi_retrans, tcpi_fackets;
  uint32_t tcpi_last_data_sent, tcpi_last_ack_sent, tcpi_last_data_recv, tcpi_last_ack_recv;
  uint32_t tcpi_pmtu, tcpi_rcv_ssthresh, tcpi_rtt, tcpi_rttvar, tcpi_snd_ssthresh, tcpi_snd_cwnd;
  uint32_t tcpi_advmss, tcpi_reordering, tcpi_rcv_rtt, tcpi_rcv_space, tcpi_total_retrans;
  uint64_t tcpi_pacing_rate, tcpi_max_pacing_rate, tcpi_bytes_acked, tcpi_bytes_received;
  uint32_t tcpi_segs_out, tcpi_segs_in, tcpi_notsent_bytes, tcpi_min_rtt;
  uint32_t tcpi_data_segs_in, tcpi_data_segs_out;
  uint64_t tcpi_delivery_rate, tcpi_busy_time, tcpi_rwnd_limited, tcpi_sndbuf_limited;
  uint32_t tcpi_delivered, tcpi_delivered_ce;
  uint64_t tcpi_bytes_sent, tcpi_bytes_retrans;
  uint32_t tcpi_dsack_dups, tcpi_reord_seen, tcpi_rcv_ooopack, tcpi_snd_wnd;
};
]])
local function raw_tcp_table(o, n)
  local t = {
    state = o.tcpi_state, ca_state = o.tcpi_ca_state, retransmits = o.tcpi_retransmits,
    probes = o.tcpi_probes, backoff = o.tcpi_backoff, options = o.tcpi_options,
    snd_wscale = o.tcpi_snd_wscale, rcv_wscale = o.tcpi_rcv_wscale,
    delivery_rate_app_limited = o.tcpi_delivery_rate_app_limited,
    fastopen_client_fail = o.tcpi_fastopen_client_fail, rto = o.tcpi_rto, ato = o.tcpi_ato,
    snd_mss = o.tcpi_snd_mss, rcv_mss = o.tcpi_rcv_mss, unacked = o.tcpi_unacked,
    sacked = o.tcpi_sacked, lost = o.tcpi_lost, retrans = o.tcpi_retrans,
    fackets = o.tcpi_fackets, last_data_sent = o.tcpi_last_data_sent,
    last_ack_sent = o.tcpi_last_ack_sent, last_data_recv = o.tcpi_last_data_recv,
    last_ack_recv = o.tcpi_last_ack_recv, pmtu = o.tcpi_pmtu, rcv_ssthresh = o.tcpi_rcv_ssthresh,
    rtt = o.tcpi_rtt, rttvar = o.tcpi_rttvar, snd_ssthresh = o.tcpi_snd_ssthresh,
    snd_cwnd = o.tcpi_snd_cwnd, advmss = o.tcpi_advmss, reordering = o.tcpi_reordering,
    rcv_rtt = o.tcpi_rcv_rtt, rcv_space = o.tcpi_rcv_space, total_retrans = o.tcpi_total_retrans,
  }
  if n >= 232 then
    t.pacing_rate, t.max_pacing_rate = tonumber(o.tcpi_pacing_rate), tonumber(o.tcpi_max_pacing_rate)
    t.bytes_acked, t.bytes_received = tonumber(o.tcpi_bytes_acked), tonumber(o.tcpi_bytes_received)
    t.segs_out, t.segs_in = o.tcpi_segs_out, o.tcpi_segs_in
    t.notsent_bytes, t.min_rtt = o.tcpi_notsent_bytes, o.tcpi_min_rtt
    t.data_segs_in, t.data_segs_out = o.tcpi_data_segs_in, o.tcpi_data_segs_out
    t.delivery_rate, t.busy_time = tonumber(o.tcpi_delivery_rate), tonumber(o.tcpi_busy_time)
    t.rwnd_limited, t.sndbuf_limited = tonumber(o.tcpi_rwnd_limited), tonumber(o.tcpi_sndbuf_limited)
    t.delivered, t.delivered_ce = o.tcpi_delivered, o.tcpi_delivered_ce
    t.bytes_sent, t.bytes_retrans = tonumber(o.tcpi_bytes_sent), tonumber(o.tcpi_bytes_retrans)
    t.dsack_dups, t.reord_seen = o.tcpi_dsack_dups, o.tcpi_reord_seen
    t.rcv_ooopack, t.snd_wnd = o.tcpi_rcv_ooopack, o.tcpi_snd_wnd
  end
  return t
end
-- libmaxminddb 1.7 (Debian 12, x86_64: mmdb_uint128_t is unsigned __int128, so the value
-- union is 16-byte aligned); MMDB_s is opaque here (136 bytes; a larger buffer is allocated).
pcall(ffi.cdef, [[
typedef struct ts_ffi_bench_MMDB_s ts_ffi_bench_MMDB_s;
typedef struct { const ts_ffi_bench_MMDB_s *mmdb; uint32_t offset; } ts_ffi_bench_MMDB_entry_s;
typedef struct { bool found_entry; ts_ffi_bench_MMDB_entry_s entry; uint16_t netmask; }
  ts_ffi_bench_MMDB_lookup_result_s;
typedef struct {
  bool has_data;
  union { const char *utf8_string; uint32_t uint32; uint8_t uint128[16]; }
    __attribute__((aligned(16)));
  uint32_t offset, offset_to_next, data_size, type;
} ts_ffi_bench_MMDB_entry_data_s;
int MMDB_open(const char *filename, uint32_t flags, ts_ffi_bench_MMDB_s *mmdb);
ts_ffi_bench_MMDB_lookup_result_s MMDB_lookup_string(const ts_ffi_bench_MMDB_s *mmdb,
  const char *ipstr, int *gai_error, int *mmdb_error);
int MMDB_aget_value(ts_ffi_bench_MMDB_entry_s *start, ts_ffi_bench_MMDB_entry_data_s *data,
  const char *const *path);
]])
local C = ffi.C
assert(ffi.sizeof("struct ts_ffi_bench_tcp_info") == 232)
assert(ffi.sizeof("struct ts_ffi_bench_tcp_info_full") == 232)
assert(ffi.sizeof("ts_ffi_bench_MMDB_entry_data_s") == 48)
assert(ffi.offsetof("ts_ffi_bench_MMDB_lookup_result_s", "netmask") == 24)

-- The .mmdb fixture bench/run.lua writes (TS_FFI_BENCH_MMDB): opened once per Lua VM, by
-- ts_ffi.geoip and by libmaxminddb directly (MMDB_open once, as luajit-geoip does).
local MMDB_PATH = os.getenv("TS_FFI_BENCH_MMDB")
local geo
local function geo_parts()
  if geo then return geo end
  assert(MMDB_PATH, "TS_FFI_BENCH_MMDB is not set")
  local lib = ffi.load("libmaxminddb.so.0")
  local store = ffi.new("uint64_t[64]") -- 512 bytes >= sizeof(MMDB_s)
  local mm = ffi.cast("ts_ffi_bench_MMDB_s *", store)
  local rc = lib.MMDB_open(MMDB_PATH, 0, mm)
  assert(rc == 0, "MMDB_open " .. MMDB_PATH .. ": " .. rc)
  local path = ffi.new("const char *[3]", { "country", "iso_code", nil })
  geo = {
    db = assert(require("ts_ffi.geoip").open(MMDB_PATH)), mmdb = mm, mmlib = lib,
    keep = { store, path }, mpath = path, mres = ffi.new("ts_ffi_bench_MMDB_entry_data_s"),
    merr = ffi.new("int[2]"),
  }
  return geo
end

local ts_now = ffi.new("ts_ffi_bench_timespec")
local function now()
  C.clock_gettime(1, ts_now) -- CLOCK_MONOTONIC
  return tonumber(ts_now.tv_sec) + tonumber(ts_now.tv_nsec) * 1e-9
end

local sbuf = ffi.new("char[64]")
local function raw_next_hop(sa)
  if sa == nil then return nil end
  if sa.family ~= 2 then return nil end -- the origin is on 127.0.0.1 (AF_INET)
  C.inet_ntop(2, sa.addr, sbuf, 64)
  return ffi.string(sbuf), sa.port[0] * 256 + sa.port[1]
end

local by_name = {}
for _, c in ipairs(CASES) do by_name[c[1]] = c end
by_name.empty = { "empty", "last = 1", "last = 1", "last = 1" }

local VARIANT = { ffi = 2, ts_lua = 3, raw = 4 }

local function txn_pointer()
  -- bench only: ts_lua 9.2's context keeps the TSHttpTxn at byte 48 (src/ctx.rs LAYOUT_9_2).
  local ctx = rawget(getfenv(0), "__ts_http_ctx")
  return ffi.cast("void **", ffi.cast("char *", ctx) + 48)[0]
end

local TEMPLATE = [[
local E = ...
local %s = E.mod
local ts, C, txnp, bufp, ibuf, lbuf, sbuf = E.ts, E.C, E.txnp, E.bufp, E.ibuf, E.lbuf, E.sbuf
local tonumber, ffi_string, raw_next_hop = tonumber, E.ffi_string, E.raw_next_hop
local ffi_new, tcpinfo_t, slen = E.ffi_new, E.tcpinfo_t, E.slen
local tcpinfo_full_t, raw_tcp_table = E.tcpinfo_full_t, E.raw_tcp_table
local db, ip, mmdb, mmlib, mpath, mres, merr = E.db, E.ip, E.mmdb, E.mmlib, E.mpath, E.mres, E.merr
return function(n)
  local last
  for _ = 1, n do
    %s
  end
  return last
end
]]

local function measure(q)
  local case = by_name[q.case]
  if not case then error("unknown case " .. tostring(q.case)) end
  local stmt = case[VARIANT[q.variant] or error("unknown variant " .. tostring(q.variant))]
  if not stmt then error("no " .. q.variant .. " statement for " .. q.case) end
  local modname = q.case == "empty" and "txn" or q.case:match("^([%w_]+)%.")
  local mod = require("ts_ffi." .. modname)
  if q.variant == "ffi" and q.case ~= "empty" and not mod[case.fn or q.case:match("%.(.+)$")] then
    error("missing ts_ffi." .. q.case)
  end
  local E = {
    mod = mod, ts = ts, C = C, txnp = txn_pointer(), ibuf = ffi.new("int[1]"),
    lbuf = ffi.new("void *[1]"), sbuf = sbuf, ffi_string = ffi.string, raw_next_hop = raw_next_hop,
    ffi_new = ffi.new, tcpinfo_t = ffi.typeof("struct ts_ffi_bench_tcp_info"),
    slen = ffi.new("unsigned int[1]"), ip = q.ip or "81.2.69.160",
    tcpinfo_full_t = ffi.typeof("struct ts_ffi_bench_tcp_info_full"), raw_tcp_table = raw_tcp_table,
  }
  if modname == "geoip" then
    local g = geo_parts()
    E.db, E.mmdb, E.mmlib, E.mpath, E.mres, E.merr = g.db, g.mmdb, g.mmlib, g.mpath, g.mres, g.merr
  end
  local b, l = ffi.new("void *[1]"), ffi.new("void *[1]")
  if C.TSHttpTxnClientReqGet(E.txnp, b, l) == 0 then E.bufp = b[0] end
  local chunk = "=bench:" .. q.case .. ":" .. q.variant
  local loop = assert(loadstring(TEMPLATE:format(modname, stmt), chunk))(E)
  local n = tonumber(q.n) or 1000000
  -- The transaction's first ts_ffi call finds and checks its context (base.acquire_ctx,
  -- interpreter-only by design: jit.off). Done here, before jit.v watches, so the log shows
  -- the loop alone: otherwise, once an earlier transaction left a compiled trace of a ts_ffi
  -- function (e.g. tcpinfo.lua's query_field, hot from the interpreted warm-up iterations),
  -- this transaction's first call leaves that trace where the cached record is missing,
  -- and after LuaJIT's hotexit count a side trace is tried from there; it aborts at
  -- acquire_ctx ("JIT compilation disabled"): a few times per trace exit, then no more.
  require("ts_ffi.base").get_ctx("bench")
  if q.jitv then require("jit.v").on(q.jitv) end
  if q.dump then require("jit.dump").on(q.dumpflags or "tbirsmX", q.dump) end
  loop(1000) -- warm-up: the loop's trace is compiled here
  local t0 = now()
  local last = loop(n)
  local t1 = now()
  if q.jitv then require("jit.v").off() end
  if q.dump then require("jit.dump").off() end
  return string.format("ns=%.3f last=%s jit=%s", (t1 - t0) / n * 1e9, tostring(last),
    tostring((jit.status())))
end

local function run(q)
  local ok, res = pcall(measure, q)
  if ok then ts.ctx.bench = res else ts.ctx.bench_error = tostring(res):gsub("[\r\n]", " ") end
end

local function send_response()
  if ts.ctx.bench then ts.client_response.header["X-Bench"] = ts.ctx.bench end
  if ts.ctx.bench_error then ts.client_response.header["X-Bench-Error"] = ts.ctx.bench_error end
end

function do_remap()
  local q = {}
  for k, v in (ts.client_request.get_uri_args() or ""):gmatch("([^&=]+)=([^&]*)") do q[k] = v end
  local case = by_name[q.case or ""]
  if case and case.where == "remap" then
    run(q)
  else
    ts.hook(TS_LUA_HOOK_READ_RESPONSE_HDR, function() run(q) end)
  end
  ts.hook(TS_LUA_HOOK_SEND_RESPONSE_HDR, send_response)
  return 0
end
