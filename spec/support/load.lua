-- Load tooling for `make bench` and the soak: an nginx origin on a free loopback port and wrk
-- against the sandbox proxy, both bounded in time and always stopped.
--
--   local load = require "support.load"
--   local origin = load.nginx { body = "hello\n" }   -- origin.port, origin:stop()
--   local sb = ats.start { origin_port = origin.port, remap = { ... } }
--   local r = load.wrk { port = sb.port, host = "x.test", seconds = 10, connections = 16 }
--   -- r.requests, r.rps, r.p50_ms, r.p99_ms, r.non2xx, r.socket_errors, r.status (table), r.raw
--
-- Debian packages: nginx-light (or nginx) and wrk.
local socket = require "socket"

local M = {}

-- The process and file helpers the sandbox harness already has.
local ats = require "support.ats"
local sh, read, write, free_port, port_open, alive, wait_until =
  ats.sh, ats.read, ats.write, ats.free_port, ats.port_open, ats.alive, ats.wait_until

local function mktemp(tag)
  local p = io.popen("mktemp -d /tmp/ts_ffi_" .. tag .. ".XXXXXX")
  local dir = p:read("*l")
  p:close()
  return dir
end

local function nginx_bin()
  for _, p in ipairs { "/usr/sbin/nginx", "/usr/bin/nginx" } do
    if sh("test -x " .. p) then return p end
  end
  error("nginx not found (Debian: apt-get install nginx-light)", 3)
end

local Origin = {}
Origin.__index = Origin

-- Starts nginx in the foreground of its own process group (one master, `opts.workers`
-- workers, default 1) answering every GET with 200 and `opts.body`, keep-alive on.
function M.nginx(opts)
  opts = opts or {}
  local bin = nginx_bin()
  local dir = mktemp("nginx")
  local self = setmetatable({ dir = dir, port = opts.port or free_port() }, Origin)
  local body = (opts.body or "ts_ffi origin\n"):gsub("\\", "\\\\"):gsub('"', '\\"'):gsub("\n", "\\n")
  write(dir .. "/nginx.conf", table.concat({
    "worker_processes " .. (opts.workers or 1) .. ";",
    "error_log " .. dir .. "/error.log warn;",
    "pid " .. dir .. "/nginx.pid;",
    "events { worker_connections 4096; }",
    "http {",
    "  access_log off;",
    "  client_body_temp_path " .. dir .. "/body;",
    "  proxy_temp_path " .. dir .. "/proxy;",
    "  fastcgi_temp_path " .. dir .. "/fastcgi;",
    "  uwsgi_temp_path " .. dir .. "/uwsgi;",
    "  scgi_temp_path " .. dir .. "/scgi;",
    "  keepalive_requests 1000000;",
    "  keepalive_timeout 60s;",
    "  default_type text/plain;",
    "  server {",
    "    listen 127.0.0.1:" .. self.port .. " backlog=4096;",
    '    location / { return 200 "' .. body .. '"; }',
    "  }",
    "}", "" }, "\n"))
  assert(sh(string.format("(exec %s -p %s/ -c %s/nginx.conf -g 'daemon off;') </dev/null "
    .. ">%s/stdout.log 2>&1 & echo $! > %s/master.pid", bin, dir, dir, dir, dir)))
  self.pid = read(dir .. "/master.pid"):match("%d+")
  if not wait_until(10, function() return port_open(self.port) or not alive(self.pid) end)
    or not alive(self.pid) then
    local why = (read(dir .. "/stdout.log") or "") .. (read(dir .. "/error.log") or "")
    self:stop()
    error("nginx did not start:\n" .. why, 2)
  end
  return self
end

function Origin:stop()
  local workers = {}
  local p = io.popen("pgrep -P " .. self.pid .. " 2>/dev/null")
  for pid in p:read("*a"):gmatch("%d+") do workers[#workers + 1] = pid end
  p:close()
  if alive(self.pid) then
    sh("kill -QUIT " .. self.pid .. " 2>/dev/null") -- graceful: the master stops its workers
    wait_until(5, function() return not alive(self.pid) end)
    if alive(self.pid) then sh("kill -9 " .. self.pid .. " 2>/dev/null") end
  end
  for _, pid in ipairs(workers) do -- workers left by a killed master
    if alive(pid) then sh("kill -9 " .. pid .. " 2>/dev/null") end
  end
  sh("rm -rf " .. self.dir)
end

-- Milliseconds from wrk's "12.34us" / "1.20ms" / "2.00s".
local function ms(v, unit)
  v = tonumber(v)
  if not v then return nil end
  if unit == "us" then return v / 1000 elseif unit == "s" then return v * 1000
  elseif unit == "m" then return v * 60000 end
  return v
end

-- wrk's summary on stdout → table. Status counts come from the Lua script below (lines
-- "status <code> <count>").
function M.parse_wrk(out)
  local r = { raw = out, status = {} }
  r.requests = tonumber(out:match("(%d+) requests in"))
  r.rps = tonumber(out:match("Requests/sec:%s*([%d%.]+)"))
  r.p50_ms = ms(out:match("\n%s*50%%%s+([%d%.]+)(%a+)"))
  r.p99_ms = ms(out:match("\n%s*99%%%s+([%d%.]+)(%a+)"))
  r.non2xx = tonumber(out:match("Non%-2xx or 3xx responses:%s*(%d+)")) or 0
  local c, rd, w, t = out:match("Socket errors: connect (%d+), read (%d+), write (%d+), timeout (%d+)")
  r.socket_errors = (tonumber(c) or 0) + (tonumber(rd) or 0) + (tonumber(w) or 0) + (tonumber(t) or 0)
  for code, n in out:gmatch("\nstatus (%d+) (%d+)") do
    r.status[tonumber(code)] = (r.status[tonumber(code)] or 0) + tonumber(n)
  end
  local ok = 0
  for code, n in pairs(r.status) do
    if code >= 200 and code < 300 then ok = ok + n end
  end
  r.count_2xx = ok
  r.not_2xx = (r.requests or 0) - ok
  return r
end

-- Counts every response's status per wrk thread and prints the totals (cost: wrk parses each
-- response in Lua; used when opts.count_status is set, and by bench/waf.lua's scripts). It
-- defines setup, init, response and done; parse_wrk reads its lines.
local STATUS_SCRIPT = [[
local threads = {}
function setup(thread) threads[#threads + 1] = thread end
function init() counts = {} end
function response(status) counts[status] = (counts[status] or 0) + 1 end
function done()
  local total = {}
  for _, t in ipairs(threads) do
    for code, n in pairs(t:get("counts") or {}) do total[code] = (total[code] or 0) + n end
  end
  for code, n in pairs(total) do io.write("status ", code, " ", n, "\n") end
end
]]

-- Runs wrk for opts.seconds (bounded by `timeout`) and returns the parsed result.
-- opts: port, host, path, seconds, connections (16), threads (1), count_status,
-- background (returns a handle with :wait() instead of waiting).
function M.wrk(opts)
  local dir = mktemp("wrk")
  local seconds = opts.seconds or 10
  local script = ""
  if opts.count_status then
    write(dir .. "/status.lua", STATUS_SCRIPT)
    script = "-s " .. dir .. "/status.lua "
  end
  local cmd = string.format("timeout -k 5 %d wrk -t%d -c%d -d%ds --timeout 5s --latency %s"
    .. "-H 'Host: %s' http://127.0.0.1:%d%s", seconds + 30, opts.threads or 1,
    opts.connections or 16, seconds, script, opts.host or "localhost", opts.port, opts.path or "/")
  local handle = { dir = dir, cmd = cmd }
  assert(sh(string.format("(exec %s) </dev/null >%s/out.log 2>&1 & echo $! > %s/pid", cmd, dir, dir)))
  handle.pid = read(dir .. "/pid"):match("%d+")
  function handle.running() return alive(handle.pid) end
  function handle.wait()
    wait_until(seconds + 40, function() return not alive(handle.pid) end)
    if alive(handle.pid) then sh("kill -9 " .. handle.pid .. " 2>/dev/null") end
    local out = read(dir .. "/out.log") or ""
    sh("rm -rf " .. dir)
    local r = M.parse_wrk(out)
    if not r.requests then error("wrk gave no result (" .. cmd .. "):\n" .. out, 2) end
    return r
  end
  if opts.background then return handle end
  return handle.wait()
end

-- VmRSS of a process in kB, from /proc/PID/status.
function M.rss_kb(pid)
  local s = read("/proc/" .. pid .. "/status") or ""
  return tonumber(s:match("VmRSS:%s*(%d+)"))
end

M.STATUS_SCRIPT = STATUS_SCRIPT
M.free_port = free_port
M.sleep = socket.sleep
M.now = socket.gettime

return M
