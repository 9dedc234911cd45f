-- The WAF part of `make bench` (bench/run.lua calls it; `luajit bench/run.lua --only waf`
-- runs it alone): ts_ffi.waf with Debian's OWASP CRS inside the sandboxed traffic_server,
-- next to libmodsecurity's own cost in C.
--
-- 1. Cost per request. C: bench/waf_cost.c loads the same rule files and runs the same clean
--    and attack GETs through libmodsecurity, one transaction after another, timed per
--    transaction. ts_ffi: sequential requests on one keep-alive connection
--    (bench/waf_load.c, closed loop, one connection), each run with protect() and without it
--    (the same script, another remap rule); the cost is the difference of the median
--    latencies (critical path), and traffic_server's CPU time per request with minus without
--    (all the work, logging phase included), split into task and network threads.
-- 2. Throughput: wrk (closed loop) with all traffic protected, clean / attack / 1-in-10
--    attack mixes, at proxy.config.task_threads 2 (ATS's default) and more.
-- 3. Latency of requests that skip the WAF (the "off" remap rule, fixed rate) with no WAF
--    traffic, with WAF traffic offered at half the measured capacity (fixed rate, open
--    loop), and with the WAF saturated (closed loop).
--
-- Options (bench/run.lua's): --waf-runs 5, --waf-seconds 4 (each throughput and latency
-- run), --waf-seq-seconds 1.5 (each sequential cost run), --waf-n 1000 (C transactions per
-- run), --waf-task-threads 2,4, --waf-connections 32, --waf-probe-rate 200, --waf-gap-us 5000
-- (sleep before each paced C transaction). Shorter: --waf-runs 3 --waf-seconds 2.
local ats = require "support.ats"
local load = require "support.load"

local M = {}

local ROOT = ats.root
local BIN = ROOT .. "/build/bench"
local WAF_HOST, OFF_HOST = "waf.bench", "nowaf.bench"
M.CLEAN = "/search?q=hello+world&lang=en"
M.ATTACK = "/search?q=1%27%20OR%20%271%27%3D%271&lang=en" -- 1' OR '1'='1: CRS 942xxx, denied 403
-- What a browser sends; every request of the WAF part carries these (wrk, waf_load, and the
-- C program, which also gets Host).
M.HEADERS = {
  "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Firefox/115.0",
  "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
  "Accept-Language: en-US,en;q=0.5",
  "Accept-Encoding: gzip, deflate",
}
local CRS_SETUP = "/etc/modsecurity/crs/crs-setup.conf"
local CRS_RULES = "/usr/share/modsecurity-crs/rules/*.conf"
local QUIET = { "CONFIG proxy.config.diags.debug.enabled INT 0" }

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local util = dofile(ROOT .. "/bench/util.lua")
local capture, median = util.capture, util.median


local function range(t)
  local lo, hi = math.huge, -math.huge
  for _, x in ipairs(t) do lo, hi = math.min(lo, x), math.max(hi, x) end
  return lo, hi
end

local function push(t, k, v)
  t[k] = t[k] or {}
  table.insert(t[k], v)
end

-- Compiles the two C programs into build/bench.
local function build()
  assert(os.execute("mkdir -p " .. BIN) == 0 or true)
  for _, b in ipairs {
    { "waf_cost", "-lmodsecurity" },
    { "waf_load", "" },
  } do
    local out, ok = capture(string.format("cc -O2 -Wall -o %s/%s %s/bench/%s.c %s", BIN, b[1],
      ROOT, b[1], b[2]))
    if not ok then error("cannot build bench/" .. b[1] .. ".c (Debian: libmodsecurity-dev, gcc):\n" .. out, 0) end
  end
end

-- The rule files, in the order ts_ffi.waf loads them (its glob sorts in the C locale).
local function rule_files(tree)
  local files = { tree .. "/share/lua/5.1/ts_ffi/modsecurity.conf", CRS_SETUP }
  assert(io.open(files[1]), "no " .. files[1] .. " (make tree)"):close()
  local list = capture("LC_ALL=C ls -1 " .. CRS_RULES)
  for f in list:gmatch("[^\n]+") do files[#files + 1] = f end
  return files
end

-- libmodsecurity in C: { rules =, clean = { median = {}, cpu = {}, status = }, attack = ... }
-- One run of bench/waf_cost (both requests), added to `into` ({ clean =, attack = }).
local function c_cost(into, files, log, gap_us, n)
  local args = { BIN .. "/waf_cost", "-n", n, "-r", 1, "-w", 50, "-g", gap_us,
                 "-h", q("Host: " .. WAF_HOST) }
  for _, h in ipairs(M.HEADERS) do args[#args + 1] = "-h " .. q(h) end
  -- nginx's answer (bench/run.lua's origin), as traffic_server hands it to the WAF
  for _, h in ipairs { "Server: nginx", "Date: Mon, 30 Nov 2026 06:00:00 GMT",
                       "Content-Type: text/plain", "Content-Length: 101", "Connection: keep-alive" } do
    args[#args + 1] = "-s " .. q(h)
  end
  -- and its body (text/plain: held back and inspected by ts_ffi, so appended here too)
  args[#args + 1] = "-b " .. q(string.rep("x", 100) .. "\n")
  args[#args + 1] = "-u " .. q(M.CLEAN)
  args[#args + 1] = "-u " .. q(M.ATTACK)
  for _, f in ipairs(files) do args[#args + 1] = "-f " .. q(f) end
  local out, ok = capture(table.concat(args, " "))
  if not ok then error("bench/waf_cost failed:\n" .. out, 0) end
  local res = into
  res.rules = tonumber(out:match("rules (%d+)"))
  res.clean, res.attack = res.clean or {}, res.attack or {}
  for run, uri, status, med, p90, mean, cpu in out:gmatch(
      "run (%d+) uri (%d+) status (%d+) median_us ([%d.]+) p90_us ([%d.]+) mean_us ([%d.]+) cpu_us ([%d.]+)") do
    local t = res[uri == "1" and "clean" or "attack"]
    t.status = tonumber(status)
    push(t, "median", tonumber(med))
    push(t, "cpu", tonumber(cpu))
    log("waf C (gap %d us) %-6s status %s median %s us cpu %s us", gap_us,
      uri == "1" and "clean" or "attack", status, med, cpu)
  end
  return res
end

-- CPU seconds of traffic_server so far: { net =, task =, all = }, per thread from
-- /proc/<pid>/task/<tid>/schedstat (run time in ns: exact, unlike the tick-sampled stat).
local function ts_cpu(pid)
  local cpu = { net = 0, task = 0, all = 0 }
  local p = io.popen("ls /proc/" .. pid .. "/task 2>/dev/null")
  for tid in p:read("*a"):gmatch("%d+") do
    local dir = "/proc/" .. pid .. "/task/" .. tid
    local comm, st = ats.read(dir .. "/comm"), ats.read(dir .. "/schedstat")
    local t = (tonumber(st and st:match("^(%d+)")) or 0) / 1e9
    cpu.all = cpu.all + t
    if comm and comm:find("ET_NET", 1, true) then cpu.net = cpu.net + t
    elseif comm and comm:find("ET_TASK", 1, true) then cpu.task = cpu.task + t end
  end
  p:close()
  return cpu
end

-- Runs bench/waf_load; returns its streams by name.
local function waf_load(port, seconds, warmup, streams)
  local args = { BIN .. "/waf_load", "-p", port, "-d", seconds, "-w", warmup, "-t", 5000 }
  for _, h in ipairs(M.HEADERS) do args[#args + 1] = "-h " .. q(h) end
  for _, s in ipairs(streams) do args[#args + 1] = "-s " .. q(s) end
  local cmd = "timeout -k 5 " .. math.ceil(seconds + 30) .. " " .. table.concat(args, " ")
  local out, ok = capture(cmd)
  if not ok then error("bench/waf_load failed (" .. cmd .. "):\n" .. out, 0) end
  local res = {}
  for line in out:gmatch("[^\n]+") do
    local name = line:match("^stream (%S+)")
    if name then
      local r = {}
      for k, v in line:gmatch("(%S+) ([%d.]+)") do r[k] = tonumber(v) end
      r.failed = (r.other or 0) + (r.errors or 0) + (r.timeouts or 0) + (r.unsent or 0)
      res[name] = r
    end
  end
  return res
end

-- A wrk script: the mix's requests in turn (`attack_every`: every n-th is the attack, 1 = all,
-- 0 = none) with the browser headers, counting statuses.
local function wrk_script(dir, host, attack_every)
  local lines = { "wrk.headers['Host'] = " .. string.format("%q", host) }
  for _, h in ipairs(M.HEADERS) do
    local k, v = h:match("^([^:]+):%s*(.*)$")
    lines[#lines + 1] = string.format("wrk.headers[%q] = %q", k, v)
  end
  lines[#lines + 1] = string.format([[
local every, clean, attack = %d, %q, %q
local reqs, i = {}, 0
function request()
  if i == 0 then -- this thread's first request: its list, made once
    local n = every > 0 and every or 1
    for k = 1, n do
      reqs[k] = wrk.format("GET", (every > 0 and k == n) and attack or clean)
    end
  end
  i = i %% #reqs + 1
  return reqs[i]
end
]], attack_every, M.CLEAN, M.ATTACK) .. load.STATUS_SCRIPT
  local path = dir .. "/mix" .. attack_every .. ".lua"
  ats.write(path, table.concat(lines, "\n") .. "\n")
  return path
end

local function wrk(port, script, seconds, connections)
  local cmd = string.format("timeout -k 5 %d wrk -t1 -c%d -d%ds --timeout 5s --latency -s %s "
    .. "http://127.0.0.1:%d/", seconds + 30, connections, seconds, script, port)
  local out = capture(cmd)
  local r = load.parse_wrk(out)
  if not r.requests then error("wrk gave no result (" .. cmd .. "):\n" .. out, 0) end
  r.ok200, r.denied = r.status[200] or 0, r.status[403] or 0
  r.failed = r.requests - r.ok200 - r.denied + r.socket_errors
  return r
end

local MIXES = {
  { "off", 0, "clean GETs, not protected (no WAF)", OFF_HOST },
  { "clean", 0, "clean GETs" },
  { "attack", 1, "SQLi GETs (all denied, 403)" },
  { "mix", 10, "1 in 10 is the SQLi" },
}

local function sandbox(origin, threads)
  local script = ROOT .. "/bench/waf_script.lua"
  local records = { "CONFIG proxy.config.task_threads INT " .. threads }
  for _, r in ipairs(QUIET) do records[#records + 1] = r end
  local sb = ats.start {
    origin_port = origin.port, records = records, start_timeout = 30,
    remap = { [WAF_HOST] = script, [OFF_HOST] = { script, "off" } },
  }
  local ok, err = pcall(function()
    for _, c in ipairs {
      { WAF_HOST, M.CLEAN, 200 }, { WAF_HOST, M.ATTACK, 403 }, { OFF_HOST, M.ATTACK, 200 },
    } do
      local curl = ""
      for _, h in ipairs(M.HEADERS) do curl = curl .. " -H " .. q(h) end
      local res = sb:get(c[1], c[2], { curl = curl })
      if res.status ~= c[3] then
        error(string.format("%s%s: status %s, expected %d\n%s", c[1], c[2], tostring(res.status),
          c[3], sb:diagnostics()), 0)
      end
    end
  end)
  if not ok then
    sb:stop()
    error(err, 0)
  end
  return sb
end

local function ts_rules(sb)
  local n
  for l in (ats.read(sb.dir .. "/waf_rules.log") or ""):gmatch("%d+") do n = tonumber(l) end
  return n
end

-- Runs the WAF part; env = { origin = nginx from support.load, log = printf-like }.
function M.run(o, env)
  local log = env.log
  local opts = {
    runs = o["waf-runs"] or 5, seconds = o["waf-seconds"] or 4,
    seq = o["waf-seq-seconds"] or 1.5, n = o["waf-n"] or 1000,
    connections = o["waf-connections"] or 32, probe_rate = o["waf-probe-rate"] or 200,
    gap = o["waf-gap-us"] or 5000,
    threads = {},
  }
  for t in tostring(o["waf-task-threads"] or "2,4"):gmatch("%d+") do opts.threads[#opts.threads + 1] = tonumber(t) end
  local started = load.now()
  build()
  local tree = ROOT .. "/build/tree"
  local files = rule_files(tree)
  local res = { opts = opts, files = #files, tp = {}, lat = {} }
  res.machine = {
    load = capture("cut -d' ' -f1-3 /proc/loadavg"),
    msc = capture("dpkg-query -W -f='${Version}' libmodsecurity3"),
    crs = capture("dpkg-query -W -f='${Version}' modsecurity-crs"),
  }

  -- C runs interleaved with ts_ffi's (same machine conditions): hot with each throughput
  -- run at the first task_threads, paced with each sequential run.
  res.c, res.c_paced = {}, {}

  local scratch = capture("mktemp -d /tmp/ts_ffi_wafbench.XXXXXX")
  local ok, err = pcall(function()
    for ti, threads in ipairs(opts.threads) do
      local sb = sandbox(env.origin, threads)
      local okr, errr = pcall(function()
        res.ts_rules = res.ts_rules or ts_rules(sb)
        local pid = sb.pid
        -- warm-up: every request kind, both rules
        waf_load(sb.port, 1.5, 1.5, {
          string.format("a %s %s 0 2 200", WAF_HOST, M.CLEAN),
          string.format("b %s %s 0 2 403", WAF_HOST, M.ATTACK),
          string.format("c %s %s 0 2 200", OFF_HOST, M.CLEAN),
        })
        if ti == 1 then ------------------------------------------------ 1. cost, sequential
          res.seq = { task_threads = threads }
          for run = 1, opts.runs do
            c_cost(res.c_paced, files, log, opts.gap, math.min(opts.n, 100))
            for _, kind in ipairs { "clean", "attack" } do
              local per = {}
              for _, host in ipairs { WAF_HOST, OFF_HOST } do
                local expect = (kind == "attack" and host == WAF_HOST) and 403 or 200
                local c0 = ts_cpu(pid)
                local r = waf_load(sb.port, opts.seq, 0, {
                  string.format("seq %s %s 0 1 %d", host, kind == "clean" and M.CLEAN or M.ATTACK, expect),
                }).seq
                local c1 = ts_cpu(pid)
                if not r or r.done == 0 then error("no sequential request completed on " .. host, 0) end
                local key = kind .. (host == WAF_HOST and "|waf" or "|off")
                push(res.seq, key .. "|p50", r.p50_us)
                push(res.seq, key .. "|p10", r.p10_us)
                push(res.seq, key .. "|cpu", (c1.all - c0.all) / r.done * 1e6)
                push(res.seq, key .. "|task", (c1.task - c0.task) / r.done * 1e6)
                push(res.seq, key .. "|net", (c1.net - c0.net) / r.done * 1e6)
                res.seq[key .. "|failed"] = (res.seq[key .. "|failed"] or 0) + r.failed
                per[host] = r
                log("waf seq run %d %-6s %-12s p10 %5d p50 %5d p90 %5d us cpu %6.1f us/req (task %.1f net %.1f) n %d failed %d",
                  run, kind, host, r.p10_us, r.p50_us, r.p90_us, (c1.all - c0.all) / r.done * 1e6,
                  (c1.task - c0.task) / r.done * 1e6, (c1.net - c0.net) / r.done * 1e6, r.done, r.failed)
              end
              push(res.seq, kind .. "|diff", per[WAF_HOST].p50_us - per[OFF_HOST].p50_us)
              push(res.seq, kind .. "|diff10", per[WAF_HOST].p10_us - per[OFF_HOST].p10_us)
            end
          end
        end
        ---------------------------------------------------------------- 2. throughput
        local tp = { threads = threads }
        res.tp[#res.tp + 1] = tp
        for run = 1, opts.runs do
          if ti == 1 then c_cost(res.c, files, log, 0, opts.n) end
          for _, mix in ipairs(MIXES) do
            if not (mix[4] and ti > 1) then -- the no-WAF baseline: once
            local script = wrk_script(scratch, mix[4] or WAF_HOST, mix[2])
            local c0 = ts_cpu(pid)
            local r = wrk(sb.port, script, opts.seconds, opts.connections)
            local c1 = ts_cpu(pid)
            for _, k in ipairs { "all", "task", "net" } do
              push(tp, mix[1] .. "|cpu_" .. k, (c1[k] - c0[k]) / r.requests * 1e6)
            end
            push(tp, mix[1] .. "|rps", r.rps)
            push(tp, mix[1] .. "|p99", r.p99_ms)
            tp[mix[1] .. "|failed"] = (tp[mix[1] .. "|failed"] or 0) + r.failed
            tp[mix[1] .. "|requests"] = (tp[mix[1] .. "|requests"] or 0) + r.requests
            tp[mix[1] .. "|denied"] = (tp[mix[1] .. "|denied"] or 0) + r.denied
            log("waf throughput task_threads %d run %d %-6s %7.0f req/s p99 %.1f ms 403 %d/%d failed %d",
              threads, run, mix[1], r.rps, r.p99_ms or -1, r.denied, r.requests, r.failed)
            end
          end
        end
        if ti == 1 then ------------------------------------------------ 3. requests that skip the WAF
          local cap = median(tp["clean|rps"])
          res.lat = { threads = threads, capacity = cap, half = math.floor(cap / 2),
                      probe_rate = opts.probe_rate }
          local probe = string.format("probe %s %s %d 8 200", OFF_HOST, M.CLEAN, opts.probe_rate)
          local waf_conns = math.max(16, math.ceil(cap / 2 * 0.02)) -- room for 20 ms latencies
          for run = 1, opts.runs do
            for _, sc in ipairs {
              { "none", { probe } },
              { "half", { probe, string.format("waf %s %s %d %d 200", WAF_HOST, M.CLEAN, res.lat.half, waf_conns) } },
              { "full", { probe, string.format("waf %s %s 0 %d 200", WAF_HOST, M.CLEAN, opts.connections) } },
            } do
              local r = waf_load(sb.port, opts.seconds, 0.5, sc[2])
              local p, w = r.probe, r.waf
              push(res.lat, sc[1] .. "|p50", p.p50_us / 1000)
              push(res.lat, sc[1] .. "|p99", p.p99_us / 1000)
              push(res.lat, sc[1] .. "|max", p.max_us / 1000)
              res.lat[sc[1] .. "|failed"] = (res.lat[sc[1] .. "|failed"] or 0) + p.failed
              res.lat[sc[1] .. "|timeouts"] = (res.lat[sc[1] .. "|timeouts"] or 0) + p.timeouts
              res.lat[sc[1] .. "|done"] = (res.lat[sc[1] .. "|done"] or 0) + p.done
              if w then
                push(res.lat, sc[1] .. "|waf_rps", w.rps)
                push(res.lat, sc[1] .. "|waf_p99", w.p99_us / 1000)
                res.lat[sc[1] .. "|waf_failed"] = (res.lat[sc[1] .. "|waf_failed"] or 0) + w.failed
              end
              log("waf skip run %d %-4s probe p50 %.2f p99 %.2f max %.1f ms failed %d%s", run, sc[1],
                p.p50_us / 1000, p.p99_us / 1000, p.max_us / 1000, p.failed,
                w and string.format(" | waf %.0f req/s p99 %.1f ms failed %d", w.rps, w.p99_us / 1000, w.failed) or "")
            end
          end
        end
      end)
      sb:stop()
      if not okr then error(errr, 0) end
    end
  end)
  os.execute("rm -rf " .. q(scratch))
  if not ok then error(err, 0) end
  res.elapsed = load.now() - started
  return res
end

------------------------------------------------------------------------------------ report
local function fmt(v, d)
  if not v then return "–" end
  return string.format("%." .. (d or 1) .. "f", v)
end

local function ratio(a, b)
  return (a and b and b ~= 0) and a / b or nil
end

local function fmt_range(t, d)
  if not t or #t == 0 then return "–" end
  local lo, hi = range(t)
  return fmt(lo, d) .. "–" .. fmt(hi, d)
end

-- The markdown section (a list of lines) for M.run's result.
function M.section(res, machine)
  local out = {}
  local function w(...) out[#out + 1] = string.format(...) end
  local o = res.opts
  w("<!-- waf:begin (bench/waf.lua; `luajit bench/run.lua --only waf` replaces this section) -->")
  w("## WAF (ts_ffi.waf with the OWASP CRS)")
  w("")
  w("Reproduce with `luajit bench/run.lua --only waf` (or `make bench-waf`); took %.0f s. Run %s",
    res.elapsed, machine.date)
  w("on commit %s, %s, %s cores (shared; load average at the start of this part %s).",
    machine.commit, machine.cpu, machine.cores, res.machine.load)
  w("libmodsecurity3 %s, modsecurity-crs %s. Rules: ts_ffi's base configuration",
    res.machine.msc, res.machine.crs)
  w("(conf/modsecurity.conf), %s and %s: %d files, %s rules", CRS_SETUP, CRS_RULES, res.files,
    tostring(res.c.rules))
  w("loaded by libmodsecurity in C and %s by ts_ffi.waf in traffic_server. Requests: a clean",
    tostring(res.ts_rules))
  w("GET `%s` and an attack, the same with SQL injection,", M.CLEAN)
  w("`%s` (denied 403 at phase 2 by the CRS's anomaly score), both with", M.ATTACK)
  w("a browser's User-Agent, Accept, Accept-Language and Accept-Encoding. The sandbox")
  w("traffic_server (2 exec threads, debug log off) proxies to an nginx origin (100-byte body)")
  w("on loopback; medians of %d runs, interleaved.", o.runs)
  w("")
  ---------------------------------------------------------------- 1
  w("### Cost per request, next to libmodsecurity in C")
  w("")
  w("*C* is bench/waf_cost.c: libmodsecurity's C API with the calls ts_ffi.waf makes for a GET")
  w("(connection, URI, request headers, phase 2, response headers and body phase, status,")
  w("logging, cleanup; a denial ends the inspection as in ts_ffi), one transaction after")
  w("another in one thread, each timed: *hot* back to back (%d per run, one run just before", o.n)
  w("each wrk run at the first task_threads below; caches warm, the floor), *paced* with %d µs", o.gap)
  w("of sleep before each (100 per run, one run before each round of sequential requests; what a")
  w("lone request meets: caches and CPU cooled down by other work, as on this shared machine).")
  w("")
  w("**CPU per request under load** (the goal's measure here): traffic_server's CPU time, all")
  w("threads (run time from /proc/<pid>/task/*/schedstat), over the wrk runs below at")
  w("task_threads %d, divided by the requests served; the WAF's cost is that with protect()", res.tp[1] and res.tp[1].threads or 2)
  w("minus the same without (the *no WAF* row), so it holds libmodsecurity's work plus all of")
  w("ts_ffi's (copying request and response headers, four hand-offs between network and task")
  w("threads, the audit log, the logging phase). Compared with C hot: both run warm.")
  w("")
  w("| request | C hot: CPU µs per transaction | (range) | traffic_server CPU µs/request, protected | not protected | added by the WAF | on task threads | on network threads | **added / C** |")
  w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
  local tp1 = res.tp[1] or {}
  local verdict = {}
  for _, kind in ipairs { "clean", "attack" } do
    local c = median(res.c[kind].cpu)
    local with, off = median(tp1[kind .. "|cpu_all"] or {}), median(tp1["off|cpu_all"] or {})
    local added = with and off and with - off
    local function part(k)
      local a, b = median(tp1[kind .. "|cpu_" .. k] or {}), median(tp1["off|cpu_" .. k] or {})
      return a and b and a - b
    end
    verdict[#verdict + 1] = ratio(added, c)
    w("| %s (%d) | %s | %s | %s | %s | %s | %s | %s | **%s** |", kind, res.c[kind].status or 0, fmt(c, 0),
      fmt_range(res.c[kind].cpu, 0), fmt(with, 0), fmt(off, 0), fmt(added, 0), fmt(part("task"), 0),
      fmt(part("net"), 0), fmt(verdict[#verdict], 2))
  end
  w("")
  local met = #verdict == 2 and verdict[1] <= 1.1 and verdict[2] <= 1.1
  w("Goal (issue 8): ts_ffi / C ≤ 1.1. Here, CPU under load: %s (%s, %s).", met and "met" or "NOT met",
    fmt(verdict[1], 2), fmt(verdict[2], 2))
  w("")
  w("**Latency added to a lone request**: %s s of sequential requests on one keep-alive", fmt(o.seq, 1))
  w("connection (bench/waf_load.c), to the protected remap rule and to the same script's")
  w("unprotected rule, interleaved; the added latency is the difference of the medians (p50;")
  w("median over the runs of each run's difference) and of the 10th percentiles (p10: the")
  w("fastest requests). It is what the WAF adds to a request's critical path: libmodsecurity's")
  w("phases before the response, the hand-offs, waiting for a task thread; the logging phase")
  w("runs after the response is sent.")
  w("")
  local s = res.seq or {}
  w("| request | C hot µs | C paced µs | p50 protected | p50 not protected | added p50 µs | (range) | added p10 µs | added p50 / C hot | added p50 / C paced | added p10 / C paced |")
  w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
  local lat = {}
  for _, kind in ipairs { "clean", "attack" } do
    local hot, paced = median(res.c[kind].median), res.c_paced and median(res.c_paced[kind].median)
    local d, d10 = median(s[kind .. "|diff"] or {}), median(s[kind .. "|diff10"] or {})
    lat[kind] = { ratio(d, hot), ratio(d10, paced) }
    w("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |", kind, fmt(hot, 0), fmt(paced, 0),
      fmt(median(s[kind .. "|waf|p50"] or {}), 0), fmt(median(s[kind .. "|off|p50"] or {}), 0),
      fmt(d, 0), fmt_range(s[kind .. "|diff"], 0), fmt(d10, 0), fmt(ratio(d, hot), 2),
      fmt(ratio(d, paced), 2), fmt(ratio(d10, paced), 2))
  end
  local fails = 0
  for k, v in pairs(s) do if k:match("|failed$") then fails = fails + v end end
  w("")
  w("Unexpected answers or errors in the sequential runs: %d.", fails)
  if lat.clean[1] and lat.clean[1] > 1.1 and lat.clean[2] and lat.clean[2] < 0.5 * lat.clean[1] then
    w("")
    w("The median lone request waits where the fastest do not: a hop between threads is")
    w("taking longer than it should. Each phase goes to a task thread (TSContScheduleOnPool)")
    w("and its verdict comes back (TSHttpTxnReenable, or TSVIOReenable for a held body). In ATS")
    w("9.2 TSContSchedule* holds the continuation's mutex while it wakes the target thread, and a")
    w("thread that wakes fast enough fails its try-lock and re-queues the event for")
    w("DELAY_FOR_RETRY (10 ms); the way back avoids that (README, ts_ffi.waf, Threads and")
    w("lifetimes), the way there cannot. Under load the task threads are busy rather than asleep,")
    w("so the throughput and CPU rows are not affected the same way.")
  end
  w("")
  w("### Throughput, all traffic protected")
  w("")
  w("wrk (1 thread, %d connections, %d s per run), every request through `engine:protect()`.",
    o.connections, o.seconds)
  w("`proxy.config.task_threads` is the number of ATS task threads libmodsecurity runs on (2 is")
  w("ATS's default). *failed*: answers other than the expected 200 / 403, socket errors and")
  w("timeouts, summed over the runs.")
  w("")
  w("| task_threads | traffic | requests/s | (range) | p99 ms | denied (403) | failed |")
  w("|---:|---|---:|---:|---:|---:|---:|")
  for _, tp in ipairs(res.tp) do
    for _, mix in ipairs(MIXES) do
      local req = tp[mix[1] .. "|requests"] or 0
      if tp[mix[1] .. "|rps"] then
        w("| %d | %s | %s | %s | %s | %s | %d |", tp.threads, mix[3], fmt(median(tp[mix[1] .. "|rps"]), 0),
          fmt_range(tp[mix[1] .. "|rps"], 0), fmt(median(tp[mix[1] .. "|p99"] or {}), 1),
          req > 0 and string.format("%.1f%%", 100 * (tp[mix[1] .. "|denied"] or 0) / req) or "–",
          tp[mix[1] .. "|failed"] or 0)
      end
    end
  end
  w("")
  ---------------------------------------------------------------- 3
  local l = res.lat
  if l and l.capacity then
    w("### Requests that skip the WAF, while WAF traffic runs")
    w("")
    w("task_threads %d. Probe: clean GETs at a fixed %d req/s (8 connections) to the remap rule",
      l.threads, l.probe_rate)
    w("that does not call protect(), %d s per run (first 0.5 s not counted), latency from when", o.seconds)
    w("each request was due (bench/waf_load.c, open loop). WAF traffic alongside, to the protected")
    w("rule: *none*; *half*: clean GETs at a fixed %d req/s, half the clean capacity measured", l.half)
    w("above (%.0f req/s); *full*: closed loop on %d connections, as fast as the WAF answers.",
      l.capacity, o.connections)
    w("")
    w("| WAF traffic | probe p50 ms | probe p99 ms | (range) | p99 vs none | probe max ms | probe failed / timeouts | WAF req/s | WAF p99 ms | WAF failed |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    local none = median(l["none|p99"] or {})
    for _, sc in ipairs { "none", "half", "full" } do
      w("| %s | %s | %s | %s | %s | %s | %d / %d | %s | %s | %s |", sc, fmt(median(l[sc .. "|p50"] or {}), 2),
        fmt(median(l[sc .. "|p99"] or {}), 2), fmt_range(l[sc .. "|p99"], 2),
        fmt(ratio(median(l[sc .. "|p99"] or {}), none), 2), fmt(median(l[sc .. "|max"] or {}), 1),
        l[sc .. "|failed"] or 0, l[sc .. "|timeouts"] or 0,
        fmt(median(l[sc .. "|waf_rps"] or {}), 0), fmt(median(l[sc .. "|waf_p99"] or {}), 1),
        l[sc .. "|waf_failed"] and tostring(l[sc .. "|waf_failed"]) or "–")
    end
    local half = ratio(median(l["half|p99"] or {}), none)
    w("")
    w("Goal (issue 8): probe p99 at half load ≤ 1.5× none (here %s: %s); at full load the probe",
      fmt(half, 2), (half and half <= 1.5) and "met" or "NOT met")
    w("requests still complete with no timeouts (here %d failed, %d timeouts: %s).",
      l["full|failed"] or 0, l["full|timeouts"] or 0,
      ((l["full|failed"] or 0) == 0 and (l["full|done"] or 0) > 0) and "met" or "NOT met")
    w("")
  end
  w("<!-- waf:end -->")
  return out
end

local BEGIN, END = "<!%-%- waf:begin.-%-%->", "<!%-%- waf:end %-%->"

-- The WAF section of a BENCHMARKS.md text, or nil.
function M.extract(text)
  local b = text and text:find(BEGIN)
  if not b then return nil end
  local _, e = text:find(END, b)
  return text:sub(b, e or #text)
end

-- BENCHMARKS.md's text: `text` (bench/run.lua's sections) with the WAF section `section`
-- (lines) appended, or, when the WAF part did not run, the WAF section of the previous file
-- `old` kept. `only_waf`: the previous file's other sections are kept too.
function M.splice(text, section, old, only_waf)
  local new = section and table.concat(section, "\n") or M.extract(old)
  if only_waf and old and old ~= "" then
    local cur = M.extract(old)
    if cur then
      local b = old:find(cur, 1, true)
      return old:sub(1, b - 1) .. (new or "") .. old:sub(b + #cur)
    end
    return (old:gsub("%s+$", "")) .. "\n\n" .. (new or "") .. "\n"
  end
  if not new then return text end
  return (text:gsub("%s+$", "")) .. "\n\n" .. new .. "\n"
end

return M
