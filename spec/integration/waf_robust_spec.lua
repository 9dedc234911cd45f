-- ts_ffi.waf robustness inside a real traffic_server with Debian's OWASP CRS: clients that
-- hang up while a task thread is inside libmodsecurity for their transaction (one, and many
-- at once), `drop`, a stress test of libmodsecurity's shared collections with 4 task threads,
-- and engines replaced by reloads under load (TS_FFI_WAF_RELOADS reloads, 100 by default,
-- about 10 s; `make soak-waf WAF_RELOADS=1000` runs more) without leaking rule sets or memory.
local ats = require "support.ats"
local socket = require "socket"

local S = ats.root .. "/spec/integration/scripts/"
local read, write, wait_until = ats.read, ats.write, ats.wait_until

local RECORDS = {
  "CONFIG proxy.config.task_threads INT 4",
  "CONFIG proxy.config.log.max_secs_per_buffer INT 1",
  "CONFIG proxy.config.http.post_copy_size INT 65536",
}

local UA = "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Firefox/115.0"

-- Opens a connection to the proxy and sends one request (nothing is read).
local function send(sb, path, headers, body)
  local c = assert(socket.tcp())
  c:settimeout(5)
  assert(c:connect("127.0.0.1", sb.port))
  local req = { (body and "POST " or "GET ") .. path .. " HTTP/1.1", "Host: robust.test",
    "User-Agent: " .. UA, "Accept: text/html,*/*;q=0.8" }
  for k, v in pairs(headers or {}) do req[#req + 1] = k .. ": " .. v end
  if body then
    req[#req + 1] = "Content-Type: application/x-www-form-urlencoded"
    req[#req + 1] = "Content-Length: " .. #body
  end
  assert(c:send(table.concat(req, "\r\n") .. "\r\n\r\n" .. (body or "")))
  return c
end

-- Closes `c`: an orderly close (FIN) or, with `rst`, a reset (SO_LINGER 0).
local function hang_up(c, rst)
  if rst then c:setoption("linger", { on = true, timeout = 0 }) end
  c:close()
end

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

-- Many requests at once with per-request headers (one curl, a config file with `next`):
-- reqs[i] = { path =, headers = { "Name: value", ... } }; returns the statuses in order.
local function many(sb, reqs, max)
  local cfg = os.tmpname()
  local lines = {}
  for i, r in ipairs(reqs) do
    local sep = r.path:find("?", 1, true) and "&" or "?"
    lines[#lines + 1] = ('url = "http://127.0.0.1:%d%s%si=%d"'):format(sb.port, r.path, sep, i)
    lines[#lines + 1] = 'header = "Host: robust.test"'
    for _, h in ipairs(r.headers or {}) do lines[#lines + 1] = ('header = "%s"'):format(h) end
    lines[#lines + 1] = 'output = "/dev/null"'
    lines[#lines + 1] = 'write-out = "%{http_code} %{url_effective}\\n"'
    lines[#lines + 1] = "max-time = 60"
    if i < #reqs then lines[#lines + 1] = "next" end
  end
  write(cfg, table.concat(lines, "\n") .. "\n")
  local p = io.popen(("curl -s --no-progress-meter -g -Z --parallel-max %d -K %s 2>/dev/null"):format(max or 20, cfg))
  local out = p:read("*a")
  p:close()
  os.remove(cfg)
  local status = {}
  for code, i in out:gmatch("(%d+) %S-[?&]i=(%d+)\n") do status[tonumber(i)] = tonumber(code) end
  return status
end

local function rss_kb(pid)
  local s = read("/proc/" .. pid .. "/status") or ""
  return tonumber(s:match("VmRSS:%s*(%d+)"))
end

-- traffic_server's pid under traffic_manager (which opens the port before it starts
-- traffic_server; the server's main thread is renamed, so match its command line).
local function ts_pid(sb)
  local pid
  wait_until(10, function()
    local p = io.popen("pgrep -P " .. sb.pid .. " -f 'bin/traffic_server'")
    pid = p:read("*l")
    p:close()
    return pid ~= nil
  end)
  return pid
end

local function no_crash(sb)
  local diags = sb:log("diags.log")
  assert.falsy(diags:find("FATAL", 1, true), diags:match("[^\n]*FATAL[^\n]*"))
  assert.falsy(diags:find("Segmentation", 1, true))
  assert.falsy(diags:find("waf protect failed", 1, true), diags:match("[^\n]*waf protect failed[^\n]*"))
end

describe("ts_ffi.waf robustness (4 task threads, the OWASP CRS)", function()
  local sb, server_pid

  setup(function()
    sb = ats.start {
      remap = { ["robust.test"] = S .. "waf_robust.lua" },
      records = RECORDS,
      start_timeout = 30,
    }
    assert(os.execute("mkdir -p " .. sb.dir .. "/slow"))
    server_pid = sb.pid
  end)

  teardown(function()
    if sb then sb:stop() end
  end)

  -- The logging phase's line for `tag` in the audit log (bounded wait).
  local function logged(tag, seconds)
    return wait_until(seconds or 15, function()
      return sb:log("ts_ffi_waf.log"):find("logging phase for " .. tag .. " status", 1, true) ~= nil
    end)
  end

  local function still_serving()
    assert.is_true(sb:alive())
    assert.equal(server_pid, sb.pid)
    assert.equal(200, sb:get("robust.test", "/after", { curl = "-A '" .. UA .. "'" }).status)
    assert.equal(403, sb:get("robust.test", "/x?id=1%27%20OR%20%271%27=%271",
      { curl = "-A '" .. UA .. "'" }).status)
  end

  for _, case in ipairs {
    { "phase 1 (request headers)", "p1", nil },
    { "phase 2 (request body)", "p2", "body", "name=Ada&lang=en" },
    { "phase 3 (response headers)", "p3", "response" },
  } do
    for _, rst in ipairs { false, true } do
      local name = case[2] .. (rst and "rst" or "fin")
      it(("a client that hangs up (%s) while %s runs inside libmodsecurity"):format(
          rst and "RST" or "FIN", case[1]), function()
        local tag = name .. "-1500"
        local c = send(sb, "/abort/" .. name, { ["X-Slow"] = tag, ["X-Slow-Phase"] = case[3] }, case[4])
        -- the task thread is inside the slow rule now (it wrote .in and sleeps 1.5 s)
        assert.is_true(wait_until(10, function() return exists(sb.dir .. "/slow/" .. name .. ".in") end),
          "the slow phase never started")
        assert.is_false(exists(sb.dir .. "/slow/" .. name .. ".out"))
        hang_up(c, rst)
        -- the phase finishes, then the logging phase runs for this transaction
        assert.is_true(wait_until(10, function() return exists(sb.dir .. "/slow/" .. name .. ".out") end))
        assert.is_true(logged(tag), "no logging phase for " .. tag .. ":\n" .. sb:log("ts_ffi_waf.log"))
        still_serving()
      end)
    end
  end

  it("40 clients hanging up at once, queued or inside libmodsecurity: every logging phase runs", function()
    local conns = {}
    for i = 1, 40 do
      local phase = ({ nil, "body", "response" })[i % 3 + 1]
      conns[i] = send(sb, "/many/" .. i, { ["X-Slow"] = "m" .. i .. "-250", ["X-Slow-Phase"] = phase },
        phase == "body" and "a=1" or nil)
    end
    -- 4 task threads, 250 ms each: after 0.6 s some are done, 4 are inside, most are queued
    socket.sleep(0.6)
    local started = 0
    for i = 1, 40 do
      if exists(sb.dir .. "/slow/m" .. i .. ".in") then started = started + 1 end
      hang_up(conns[i], i % 2 == 0)
    end
    local missing
    assert.is_true(wait_until(40, function()
      missing = {}
      local log = sb:log("ts_ffi_waf.log")
      for i = 1, 40 do
        if not log:find("logging phase for m" .. i .. "-250 status", 1, true) then missing[#missing + 1] = i end
      end
      return #missing == 0
    end), "no logging phase for: " .. table.concat(missing or {}, " "))
    still_serving()
    no_crash(sb)
    print(("\n# 40 concurrent aborts: %d had entered libmodsecurity when their client hung up; "
      .. "40/40 logging phases ran"):format(started))
  end)

  it("drop is refused like deny: 403 with the WAF's body (libmodsecurity 3.0.9's drop executes a deny)", function()
    local res = sb:get("robust.test", "/?drop=me", { curl = "-A '" .. UA .. "'" })
    assert.equal(403, res.status)
    assert.truthy(res.body:find("blocked by the web application firewall", 1, true))
    -- the connection is closed after it? No: ATS keeps it like any 403 (curl reuses it)
    local seq = sb:get_sequence("robust.test", { "/?drop=me", "/fine" }, { curl = "-A '" .. UA .. "'" })
    assert.equal(403, seq[1].status)
    assert.equal(200, seq[2].status)
  end)

  it("shared collections under load: 4 task threads, 600 requests 40 at once, every verdict right", function()
    -- scanner user agents, each distinct, make the CRS (913100) write new keys into the
    -- process-wide ip collection while every other request runs the rest of the CRS
    local reqs, want = {}, {}
    local attacks = { "/q?id=1%27%20OR%20%271%27=%271", "/s?q=%3Cscript%3Ealert(1)%3C/script%3E",
      "/d?file=../../../../etc/passwd", "/p?host=127.0.0.1;cat%20/etc/passwd" }
    for i = 1, 600 do
      local k = i % 4
      if k == 0 then
        reqs[i], want[i] = { path = "/scan/" .. i, headers = { "User-Agent: sqlmap/1." .. i .. " (https://sqlmap.org)" } }, 403
      elseif k == 1 then
        reqs[i], want[i] = { path = attacks[math.floor(i / 4) % 4 + 1], headers = { "User-Agent: " .. UA } }, 403
      else
        reqs[i], want[i] = { path = "/ok/" .. i .. "?page=" .. i, headers = { "User-Agent: " .. UA,
          "Accept: text/html" } }, 200
      end
    end
    local t0 = socket.gettime()
    local got = many(sb, reqs, 40)
    local wrong = {}
    for i = 1, 600 do
      if got[i] ~= want[i] then wrong[#wrong + 1] = i .. ":" .. tostring(got[i]) .. "/" .. want[i] end
    end
    assert.equal(0, #wrong, "wrong verdicts: " .. table.concat(wrong, " ", 1, math.min(#wrong, 20)))
    still_serving()
    no_crash(sb)
    print(("\n# collections stress: 600 requests (150 distinct scanner UAs), 40 at once, 4 task threads, "
      .. "0 wrong verdicts, %.1f s"):format(socket.gettime() - t0))
  end)
end)

describe("ts_ffi.waf engines replaced by reloads under load", function()
  local sb, server
  local RELOADS = tonumber(os.getenv("TS_FFI_WAF_RELOADS")) or 100
  local MAX_STATES = 4

  setup(function()
    sb = ats.start {
      manager = true,
      max_states = MAX_STATES,
      global = "--enable-reload " .. S .. "waf_robust.lua",
      remap = { ["robust.test"] = {} },
      records = RECORDS,
      start_timeout = 30,
    }
    assert(os.execute("mkdir -p " .. sb.dir .. "/slow"))
    server = ts_pid(sb)
  end)

  teardown(function()
    if sb then sb:stop() end
  end)

  local function live()
    local res = sb:get("robust.test", "/__live")
    return tonumber(res.headers["x-live"]), tonumber(res.headers["x-gen"])
  end

  -- Engines loaded for generation `g` (one line per VM).
  local function loads(g)
    local n = 0
    for line in ((read(sb.dir .. "/loads.log") or "")):gmatch("[^\n]+") do
      if line:match("^(%d+) ") == tostring(g) then n = n + 1 end
    end
    return n
  end

  local function reload_to(g)
    write(sb.dir .. "/gen", g .. "\n")
    local out, ok = sb:ctl("config reload")
    assert(ok, "traffic_ctl config reload: " .. out)
  end

  -- Load in the background until `stop` exists: rounds of 90 requests (a third of them
  -- attacks), 8 at once, each answer appended to `out` as "<status> <url>".
  local function background_load(out, stop)
    local cfg = sb.dir .. "/bg.curl"
    local lines = {}
    for i = 1, 90 do
      local path = (i % 3 == 0) and "/bg/atk?id=1%27%20OR%20%271%27=%271&i=" .. i or "/bg/ok/" .. i
      lines[#lines + 1] = ('url = "http://127.0.0.1:%d%s"'):format(sb.port, path)
      lines[#lines + 1] = 'header = "Host: robust.test"'
      lines[#lines + 1] = 'header = "User-Agent: ' .. UA .. '"'
      lines[#lines + 1] = 'output = "/dev/null"'
      lines[#lines + 1] = 'write-out = "%{http_code} %{url_effective}\\n"'
      lines[#lines + 1] = "max-time = 30"
      if i < 90 then lines[#lines + 1] = "next" end
    end
    write(cfg, table.concat(lines, "\n") .. "\n")
    assert(os.execute(("(while [ ! -e %s ]; do curl -s --no-progress-meter -g -Z --parallel-max 8 -K %s "
      .. ">> %s 2>/dev/null; done; touch %s.done) </dev/null >/dev/null 2>&1 &"):format(stop, cfg, out, stop)))
  end

  -- Checks the background load's answers: clean 200, attacks 403; returns how many.
  local function check_background(out)
    local n, wrong = 0, {}
    for code, url in (read(out) or ""):gmatch("(%d+) (%S+)\n") do
      n = n + 1
      local want = url:find("/bg/atk", 1, true) and "403" or "200"
      if code ~= want then wrong[#wrong + 1] = code .. " " .. url end
    end
    assert.equal(0, #wrong, "wrong answers under reloads: " .. table.concat(wrong, "; ", 1, math.min(5, #wrong)))
    return n
  end

  it("an old engine lives while a transaction holds it and is freed when it ends", function()
    assert.is_true(wait_until(10, function() return loads(0) >= MAX_STATES end))
    assert.equal(1, (live()))
    -- a transaction on generation 0's engine, held 3 s inside libmodsecurity
    local c = send(sb, "/held", { ["X-Slow"] = "held-3000" })
    assert.is_true(wait_until(10, function() return exists(sb.dir .. "/slow/held.in") end))
    reload_to(1)
    assert.is_true(wait_until(20, function() return loads(1) >= MAX_STATES end), "reload 1 did not land")
    local n, g = live()
    assert.equal(1, g)
    assert.equal(2, n, "the held transaction keeps the old engine")
    c:settimeout(10)
    local line = c:receive("*l")
    c:close()
    assert.matches("^HTTP/1.1 200", line)
    assert.is_true(wait_until(10, function() return live() == 1 end), "the old engine was not freed")
  end)

  it(("%d reloads under load: each makes a new engine, old ones are freed, verdicts right, RSS flat")
      :format(RELOADS), function()
    -- RSS baseline: after the first reload here; after reload 50 in a long run (glibc's
    -- per-thread arenas keep freed rule sets' memory: measured, RSS climbs in steps of one
    -- rule set for the first ~30 reloads, then stays flat)
    local base_g = RELOADS >= 60 and 51 or 2
    local base_rss
    local rss = {}
    local out, stop = sb.dir .. "/bg.out", sb.dir .. "/bg.stop"
    background_load(out, stop)
    local t0 = socket.gettime()
    local ok, err = pcall(function()
      for g = 2, RELOADS + 1 do
        reload_to(g)
        -- the reload lands (every VM loaded generation g) while the load runs
        assert.is_true(wait_until(30, function() return loads(g) >= MAX_STATES end), "reload " .. g .. " did not land")
        rss[#rss + 1] = rss_kb(ts_pid(sb))
        if os.getenv("TS_FFI_WAF_RSS_TRACE") then io.stderr:write(g, " ", rss[#rss], "\n") end
        if g == base_g then base_rss = rss[#rss] end
      end
    end)
    write(stop, "")
    wait_until(40, function() return exists(stop .. ".done") end)
    assert(ok, err)
    local elapsed = socket.gettime() - t0
    local requests = check_background(out)
    assert.is_true(requests >= 90, "background requests: " .. requests)
    -- every reload made a new engine: one id per generation, shared by its VMs
    local ids = {}
    for gen, id in (read(sb.dir .. "/loads.log") or ""):gmatch("(%d+) (%d+)\n") do
      ids[gen] = ids[gen] or {}
      ids[gen][id] = true
    end
    local seen = {}
    for g = 0, RELOADS + 1 do
      local n, one = 0, nil
      for id in pairs(ids[tostring(g)] or {}) do n, one = n + 1, id end
      assert.equal(1, n, "generation " .. g .. " engines")
      assert.is_nil(seen[one], "engine reused across generations")
      seen[one] = true
    end
    -- old engines freed: only the current one is alive once the load has ended
    assert.is_true(wait_until(10, function() return live() == 1 end), "live engines: " .. tostring(live()))
    local _, g = live()
    assert.equal(RELOADS + 1, g)
    assert.equal(409, sb:get("robust.test", "/?gen=" .. g, { curl = "-A '" .. UA .. "'" }).status)
    assert.equal(200, sb:get("robust.test", "/?gen=" .. (g - 1), { curl = "-A '" .. UA .. "'" }).status)
    assert.equal(server, ts_pid(sb))
    no_crash(sb)
    local last = rss[#rss]
    local growth = base_rss and (last - base_rss) or 0
    print(("\n# %d reloads under load in %.0f s: %d requests (8 at once, a third attacks), 0 wrong; "
      .. "live engines after: 1; traffic_server RSS %s KiB (after reload %d) -> %d KiB (after reload %d), %+d KiB")
      :format(RELOADS, elapsed, requests, tostring(base_rss), base_g - 1, last, RELOADS, growth))
    -- A CRS rule set costs about 16 MiB of RSS (measured with libmodsecurity 3.0.9), so
    -- leaking each old one would grow RSS by 16 MiB per reload. Long runs: less than one rule
    -- set over the last 50 reloads. Short runs (allocator arenas still filling): less than
    -- half a rule set per reload.
    local bound = (base_g > 2) and 16 * 1024 or 8 * 1024 * (RELOADS + 1 - base_g)
    assert.is_true(growth < bound, ("RSS grew by %d KiB (bound %d KiB)"):format(growth, bound))
  end)
end)
