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
]])
local C = ffi.C

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
  if q.variant == "ffi" and q.case ~= "empty" and not mod[q.case:match("%.(.+)$")] then
    error("missing ts_ffi." .. q.case)
  end
  local E = {
    mod = mod, ts = ts, C = C, txnp = txn_pointer(), ibuf = ffi.new("int[1]"),
    lbuf = ffi.new("void *[1]"), sbuf = sbuf, ffi_string = ffi.string, raw_next_hop = raw_next_hop,
  }
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
