-- A throw-away traffic_server sandbox for the integration specs and the demo.
--
--   local ats = require "support.ats"
--   local sb = ats.start{ remap = { ["foo.test"] = "/abs/script.lua" }, global = "/abs/g.lua" }
--   local res = sb:get("foo.test", "/path")  -- { status =, headers = {lowercased}, body = }
--   sb:stop()
--
-- The sandbox runs as root in a temporary runroot on loopback with free ports, with an origin
-- (spec/support/origin.lua). The Lua tree under test is given to traffic_server through
-- LUA_PATH / LUA_CPATH (opts.tree, default build/tree; opts.lua_path = false leaves that to
-- the scripts, which get TS_FFI_TREE). stop() always kills both processes.
-- opts.origin_port: use an origin already listening on that loopback port (e.g. nginx from
-- spec/support/load.lua) instead of starting spec/support/origin.lua.
local socket = require "socket"

local M = {}

-- The repository root, absolute (traffic_server runs in another directory).
local ROOT = debug.getinfo(1, "S").source:sub(2):match("^(.*)/spec/support/") or "."
if ROOT:sub(1, 1) ~= "/" then
  ROOT = os.getenv("PWD") .. (ROOT == "." and "" or "/" .. ROOT)
end
M.root = ROOT

local function sh(cmd)
  local ok = os.execute(cmd)
  return ok == 0 or ok == true
end

local function read(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end
M.free_port = free_port

local function port_open(port)
  local c = socket.tcp()
  c:settimeout(0.2)
  local ok = c:connect("127.0.0.1", port)
  c:close()
  return ok ~= nil
end

local function alive(pid)
  return pid and sh("kill -0 " .. pid .. " 2>/dev/null")
end

local function wait_until(seconds, pred)
  local deadline = socket.gettime() + seconds
  while socket.gettime() < deadline do
    if pred() then return true end
    socket.sleep(0.05)
  end
  return pred()
end

-- Shared with the other support modules (load.lua) and specs.
M.sh, M.read, M.write, M.port_open, M.alive, M.wait_until = sh, read, write, port_open, alive,
  wait_until

local Sandbox = {}
Sandbox.__index = Sandbox

function M.start(opts)
  opts = opts or {}
  local dir = io.popen("mktemp -d /tmp/ts_ffi_sandbox.XXXXXX"):read("*l")
  local self = setmetatable({ dir = dir, port = free_port(),
    origin_port = opts.origin_port or free_port() }, Sandbox)
  local cfg = dir .. "/etc"
  assert(sh("mkdir -p " .. cfg .. " " .. dir .. "/log " .. dir .. "/run " .. dir .. "/cache "
    .. dir .. "/var && cp -r /etc/trafficserver/body_factory " .. cfg .. "/"))

  write(dir .. "/runroot.yaml", table.concat({
    "prefix: " .. dir, "exec_prefix: " .. dir, "bindir: /usr/bin", "sbindir: /usr/sbin",
    "sysconfdir: " .. cfg, "datadir: " .. dir, "includedir: /usr/include",
    "libdir: /usr/lib/trafficserver", "libexecdir: /usr/lib/trafficserver/modules",
    "localstatedir: " .. dir .. "/var", "runtimedir: " .. dir .. "/run",
    "logdir: " .. dir .. "/log", "cachedir: " .. dir .. "/cache", "" }, "\n"))

  local records = {
    "CONFIG proxy.config.admin.user_id STRING #-1",
    "CONFIG proxy.config.http.server_ports STRING " .. self.port,
    "CONFIG proxy.config.http.cache.http INT 0",
    "CONFIG proxy.config.reverse_proxy.enabled INT 1",
    "CONFIG proxy.config.url_remap.remap_required INT 1",
    "CONFIG proxy.config.exec_thread.autoconfig INT 0",
    "CONFIG proxy.config.exec_thread.limit INT " .. (opts.threads or 2),
    "CONFIG proxy.config.plugin.lua.max_states INT " .. (opts.max_states or 4),
    "CONFIG proxy.config.diags.debug.enabled INT 1",
    "CONFIG proxy.config.diags.debug.tags STRING ts_lua|ts_ffi",
    "CONFIG proxy.config.http.server_session_sharing.match STRING none",
    "CONFIG proxy.config.hostdb.host_file.path STRING " .. dir .. "/hosts",
    "CONFIG proxy.config.dns.resolv_conf STRING NULL",
    -- opts.dns_port: the loopback UDP port of the only DNS server (default: a free port)
    "CONFIG proxy.config.dns.nameservers STRING 127.0.0.1:" .. (opts.dns_port or free_port()),
    "CONFIG proxy.config.dns.lookup_timeout INT 2",
    "CONFIG proxy.config.http.keep_alive_no_activity_timeout_out INT 5",
  }
  for _, line in ipairs(opts.records or {}) do records[#records + 1] = line end
  write(cfg .. "/records.config", table.concat(records, "\n") .. "\n")
  write(dir .. "/hosts", opts.hosts or "127.0.0.1 localhost\n")

  local remap = {}
  for host, script in pairs(opts.remap or {}) do
    local scripts = type(script) == "table" and script or { script }
    local line = "map http://" .. host .. "/ http://127.0.0.1:" .. self.origin_port .. "/"
    if #scripts > 0 then
      line = line .. " @plugin=tslua.so"
      for _, p in ipairs(scripts) do line = line .. " @pparam=" .. p end
    end
    remap[#remap + 1] = line
  end
  write(cfg .. "/remap.config", table.concat(remap, "\n") .. "\n")
  write(cfg .. "/plugin.config", opts.global and ("tslua.so " .. opts.global .. "\n") or "")
  write(cfg .. "/storage.config", dir .. "/cache 64M\n")
  write(cfg .. "/ip_allow.yaml", "ip_allow:\n  - apply: in\n    ip_addrs: 0/0\n    action: allow\n"
    .. "    methods: ALL\n  - apply: in\n    ip_addrs: ::/0\n    action: allow\n    methods: ALL\n")
  for _, f in ipairs { "cache.config", "hosting.config", "parent.config", "socks.config",
                       "splitdns.config", "ssl_multicert.config", "volume.config",
                       "strategies.yaml", "sni.yaml", "logging.yaml" } do
    write(cfg .. "/" .. f, "")
  end

  local tree = opts.tree or (ROOT .. "/build/tree")
  self.tree = tree
  local env = string.format("TS_FFI_TREE='%s' TS_FFI_SANDBOX='%s' ORIGIN_PORT=%d ",
    tree, dir, self.origin_port)
  if opts.lua_path ~= false then -- else scripts find the tree themselves (examples/)
    env = env .. string.format("LUA_PATH='%s/share/lua/5.1/?.lua;;' "
      .. "LUA_CPATH='%s/lib/lua/5.1/?.so;;' ", tree, tree)
  end
  for k, v in pairs(opts.env or {}) do env = env .. k .. "='" .. v .. "' " end

  if opts.origin ~= false and not opts.origin_port then
    assert(sh(string.format("cd %s && (exec luajit %s/spec/support/origin.lua %d) "
      .. "</dev/null >%s/origin.log 2>&1 & echo $! > %s/origin.pid",
      dir, ROOT, self.origin_port, dir, dir)))
    self.origin_pid = read(dir .. "/origin.pid"):match("%d+")
  end
  -- opts.manager: run under traffic_manager (it starts traffic_server; sb:ctl needs it).
  assert(sh(string.format("cd %s && (%s exec %s --run-root=%s/runroot.yaml) "
    .. "</dev/null >%s/stdout.log 2>&1 & echo $! > %s/ts.pid", dir, env,
    opts.manager and "traffic_manager" or "traffic_server", dir, dir, dir)))
  self.pid = read(dir .. "/ts.pid"):match("%d+")

  local up = wait_until(opts.start_timeout or 15, function()
    return (not alive(self.pid)) or (port_open(self.port)
      and (opts.origin == false or port_open(self.origin_port)))
  end)
  if opts.expect_exit then
    wait_until(opts.start_timeout or 15, function() return not alive(self.pid) end)
    return self
  end
  if not up or not alive(self.pid) then
    local why = self:diagnostics()
    self:stop()
    error("traffic_server did not start:\n" .. why, 2)
  end
  return self
end

-- With opts.manager: `traffic_ctl <args>` against this sandbox; returns output, success.
function Sandbox:ctl(args)
  local p = io.popen(string.format("traffic_ctl --run-root=%s/runroot.yaml %s 2>&1", self.dir, args))
  local out = p:read("*a")
  return out, p:close() == true or false
end

-- The traffic_server process's pid (under traffic_manager, its child).
function Sandbox:server_pid()
  local p = io.popen("pgrep -n -P " .. self.pid)
  local pid = p:read("*l")
  p:close()
  return pid or self.pid
end

function Sandbox:alive()
  return alive(self.pid) and port_open(self.port)
end

function Sandbox:log(name)
  return read(self.dir .. "/log/" .. name) or ""
end

-- The tail of diags.log and stdout, for failure messages.
function Sandbox:diagnostics(lines)
  lines = lines or 40
  local function tail(text)
    local t = {}
    for l in text:gmatch("[^\n]+") do t[#t + 1] = l end
    return table.concat(t, "\n", math.max(1, #t - lines + 1))
  end
  return "--- diags.log (" .. self.dir .. ")\n" .. tail(self:log("diags.log"))
    .. "\n--- stdout\n" .. tail(read(self.dir .. "/stdout.log") or "")
end

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function parse_response(raw)
  local res = { headers = {}, all = {} }
  -- keep the last response block (curl prints one per response)
  local head, body = raw:match("^(.-)\r\n\r\n(.*)$")
  if not head then return { status = 0, headers = {}, body = raw } end
  while body:match("^HTTP/%d") and body:find("\r\n\r\n", 1, true) do
    head, body = body:match("^(.-)\r\n\r\n(.*)$")
  end
  res.status = tonumber(head:match("^HTTP/%S+ (%d+)"))
  for k, v in head:gmatch("\r\n([^:\r\n]+):%s*([^\r\n]*)") do
    k = k:lower()
    res.headers[k] = v
    res.all[k] = res.all[k] or {}
    table.insert(res.all[k], v)
  end
  res.body = body
  return res
end

-- GET http://<host><path> through the proxy. opts.curl: extra curl arguments.
function Sandbox:get(host, path, opts)
  opts = opts or {}
  local cmd = string.format("curl -s -i --max-time %d -H %s %s http://127.0.0.1:%d%s 2>&1",
    opts.timeout or 10, shell_quote("Host: " .. host), opts.curl or "", self.port,
    shell_quote(path or "/"))
  local p = io.popen(cmd)
  local raw = p:read("*a")
  p:close()
  return parse_response(raw)
end

-- Several GETs in one curl run, `flags` deciding how (parallel, or in order on one
-- connection); returns the responses in request order.
local function get_many(self, host, paths, flags, opts)
  opts = opts or {}
  local args = {}
  for i, path in ipairs(paths) do
    args[#args + 1] = string.format("-o %s/many.%d %s", self.dir, i,
      shell_quote("http://127.0.0.1:" .. self.port .. path))
  end
  os.execute(string.format("curl -s -i %s --max-time %d -H %s %s >/dev/null 2>&1", flags,
    opts.timeout or 20, shell_quote("Host: " .. host), table.concat(args, " ")))
  local out = {}
  for i = 1, #paths do
    out[i] = parse_response(read(self.dir .. "/many." .. i) or "")
    os.remove(self.dir .. "/many." .. i)
  end
  return out
end

-- n concurrent GETs (curl --parallel).
function Sandbox:get_parallel(host, paths, opts)
  return get_many(self, host, paths, "-Z --parallel-max " .. ((opts or {}).max or #paths), opts)
end

-- GETs on one client connection (curl reuses it), in order.
function Sandbox:get_sequence(host, paths, opts)
  return get_many(self, host, paths, "", opts)
end

function Sandbox:stop()
  for _, pid in ipairs { self.pid, self.origin_pid } do
    if alive(pid) then
      sh("kill " .. pid .. " 2>/dev/null")
      wait_until(5, function() return not alive(pid) end)
      if alive(pid) then sh("kill -9 " .. pid .. " 2>/dev/null") end
    end
  end
  if not os.getenv("TS_FFI_KEEP_SANDBOX") then
    sh("rm -rf " .. self.dir)
  end
end

return M
