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
