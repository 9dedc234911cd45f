-- ts_ffi.dns.lookup inside a real traffic_server: names from HostDB's hosts file (IPv4 and
-- IPv6-only), literals, a name whose DNS query is never answered, concurrency, clients that
-- leave while their lookup is pending, the hooks it works in and the contexts it refuses.
local ats = require "support.ats"
local socket = require "socket"

local S = ats.root .. "/spec/integration/scripts/"
local NO_YIELD = "^ts_ffi%.dns%.lookup: cannot yield here %(do_remap, do_global_%* functions"
local NOT_PLUGINS = "ts_ffi%.dns%.lookup: cannot yield here %(the running coroutine is not the one"

describe("ts_ffi.dns inside traffic_server", function()
  local sb, hole

  local function close_log()
    local f = io.open(sb.dir .. "/dns_close.log")
    local s = f and f:read("*a") or ""
    if f then f:close() end
    return s
  end

  local function wait_for(seconds, pred)
    local deadline = socket.gettime() + seconds
    repeat
      local v = pred()
      if v then return v end
      socket.sleep(0.1)
    until socket.gettime() > deadline
  end

  setup(function()
    -- The only DNS server: a bound UDP socket that never answers (queries stay pending).
    hole = assert(socket.udp())
    assert(hole:setsockname("127.0.0.1", 0))
    hole:settimeout(0)
    local hosts = { "10.1.2.3 v4.test", "fd00::5 v6only.test", "10.4.4.4 stray.test",
                    "fd00::6 req.test", "10.5.0.2 pcall.test", "10.5.0.3 global.test" }
    for i = 1, 50 do hosts[#hosts + 1] = "10.0.1." .. i .. " host" .. i .. ".test" end
    sb = ats.start {
      remap = { ["dns.test"] = S .. "dns.lua" },
      global = S .. "dns_global.lua",
      hosts = table.concat(hosts, "\n") .. "\n",
      dns_port = select(2, hole:getsockname()),
      -- one query per address family, 2 s each, then HostDB gives up
      records = { "CONFIG proxy.config.dns.retries INT 0",
                  "CONFIG proxy.config.diags.debug.tags STRING ts_lua|ts_ffi|hostdb" },
    }
    -- HostDB loads the hosts file in the background: wait until its names resolve.
    local ready = wait_for(20, function()
      return sb:get("dns.test", "/lookup/v4.test").headers["x-addr"] == "10.1.2.3"
    end)
    assert(ready, "hosts file never loaded\n" .. sb:diagnostics())
  end)

  teardown(function()
    if sb then sb:stop() end
    if hole then hole:close() end
  end)

  local function get(path, opts)
    local res = sb:get("dns.test", path, opts)
    assert(res.status == 200, "status " .. tostring(res.status) .. "\n" .. sb:diagnostics())
    return res.headers
  end

  it("answers names from the hosts file, IPv4 and IPv6-only, as ts.host_lookup does", function()
    local h = get("/lookup/v4.test?ts=1")
    assert.equal("10.1.2.3", h["x-addr"])
    assert.equal(h["x-ts-addr"], h["x-addr"])
    h = get("/lookup/v6only.test?ts=1")
    assert.equal("fd00::5", h["x-addr"])
    assert.equal(h["x-ts-addr"], h["x-addr"])
    assert.equal("10.1.2.3 fd00::5", get("/twice/v4.test/v6only.test")["x-addr"])
  end)

  it("answers both after suspending (HostDB asks its hosts file) and inline (HostDB cache)",
    function()
      -- the first lookup of a name is delayed by HostDB, the next one answered from its cache
      assert.equal("10.0.1.50", get("/lookup/host50.test")["x-addr"])
      assert.equal("10.0.1.50", get("/lookup/host50.test")["x-addr"])
      local log = io.open(sb.dir .. "/stdout.log"):read("*a")
      assert.truthy(log:find("delaying (force=0) answer for host50.test", 1, true))
      assert.truthy(log:find("immediate answer for host50.test", 1, true))
    end)

  it("answers literal addresses, in canonical form", function()
    assert.equal("127.0.0.1", get("/lookup/127.0.0.1")["x-addr"])
    assert.equal("::1", get("/lookup/0:0::1")["x-addr"])
    assert.equal("2001:db8::7", get("/lookup/2001:DB8:0::7")["x-addr"])
  end)

  local function suspended(name)
    -- HostDB's log: the first lookup of a hosts file name is answered later, not inline
    local log = io.open(sb.dir .. "/stdout.log"):read("*a")
    return log:find("delaying (force=0) answer for " .. name, 1, true) ~= nil
  end

  it("works in SEND_REQUEST_HDR and SEND_RESPONSE_HDR hooks, in hooks of a global script, "
    .. "and under pcall, suspended each time", function()
      assert.equal("fd00::6", get("/req/req.test")["x-req-addr"])
      assert.equal("10.1.2.3", get("/lookup/v4.test")["x-addr"])
      local h = get("/errors")
      assert.equal("10.5.0.3", h["x-global-hook-addr"])
      assert.equal("true 10.5.0.2", h["x-pcall"])
      for _, name in ipairs { "req.test", "v4.test", "global.test", "pcall.test" } do
        assert.is_true(suspended(name), name)
      end
    end)

  it("answers nil, err for a name whose DNS query is never answered, after the timeout",
    function()
      while hole:receive() do end -- drain
      local t0 = socket.gettime()
      local h = get("/lookup/nowhere.invalid", { timeout = 30 })
      local waited = socket.gettime() - t0
      assert.is_nil(h["x-addr"])
      assert.equal("nil host not found", h["x-err"])
      -- HostDB did ask the DNS server, and waited for it (lookup_timeout is 2 s)
      assert.truthy(hole:receive(), "no DNS query reached the server")
      assert.is_true(waited >= 1.5, "answered after " .. waited .. " s")
      assert.equal("nil invalid host name", "nil " .. get("/errors")["x-invalid"])
    end)

  it("gives 50 concurrent requests each the right answer", function()
    local paths = {}
    for i = 1, 50 do paths[i] = "/lookup/host" .. i .. ".test" end
    for i, res in ipairs(sb:get_parallel("dns.test", paths, { timeout = 30 })) do
      assert.equal(200, res.status)
      assert.equal("10.0.1." .. i, res.headers["x-addr"])
    end
  end)

  it("survives 20 clients that hang up while their lookup is pending", function()
    local before = select(2, close_log():gsub("/req/gone", ""))
    while hole:receive() do end -- drain
    local clients = {}
    for i = 1, 20 do
      local c = assert(socket.connect("127.0.0.1", sb.port))
      c:send("GET /req/gone" .. i .. ".invalid HTTP/1.1\r\nHost: dns.test\r\n\r\n")
      clients[i] = c
    end
    -- hang up once every lookup is pending: its DNS query reached the (silent) server
    local asked = {}
    local all = wait_for(20, function()
      for q in function() return hole:receive() end do
        local i = q:match("gone(%d+)")
        if i then asked[i] = true end
      end
      local n = 0
      for _ in pairs(asked) do n = n + 1 end
      return n == 20
    end)
    for _, c in ipairs(clients) do c:close() end
    assert.truthy(all, "DNS queries seen before hanging up: " .. require("pl.pretty").write(asked))
    -- every one of those transactions ends (after its lookup is answered or cancelled)
    local closed = wait_for(40, function()
      local n = select(2, close_log():gsub("/req/gone", ""))
      return n - before >= 20 and n
    end)
    assert.truthy(closed, "transactions closed: " .. close_log())
    assert.is_true(sb:alive())
    assert.equal("10.1.2.3", get("/lookup/v4.test")["x-addr"])
  end)

  it("refuses, with a clear error, a coroutine the script created; the hook's own works",
    function()
      local h = get("/coroutine/v4.test")
      assert.matches("^false " .. NOT_PLUGINS, h["x-co"])
      assert.equal("10.1.2.3", h["x-addr"])
    end)

  it("refuses a ts.schedule callback (a coroutine of its own) while the transaction lives",
    function()
      get("/schedule", { timeout = 20 })
      local f = assert(io.open(sb.dir .. "/dns_schedule.log"))
      assert.matches("^" .. NOT_PLUGINS, f:read("*l"))
      f:close()
    end)

  it("refuses a response transform (a coroutine of its own)", function()
    local res = sb:get("dns.test", "/transform")
    assert.equal(200, res.status)
    assert.matches("%[dns " .. NOT_PLUGINS, res.body)
  end)

  it("never resumes a coroutine that does not wait for that lookup", function()
    local h = get("/stray", { timeout = 20 })
    assert.equal("userdata sleep_returned=0 nil", h["x-stray"])
    assert.equal("10.4.4.4", h["x-addr"])
    local log = io.open(sb.dir .. "/stdout.log"):read("*a")
    assert.truthy(log:find("delaying (force=0) answer for stray.test", 1, true))
  end)

  it("raises 'cannot yield here' where it cannot suspend the script", function()
    local h = get("/errors")
    assert.matches(NO_YIELD, h["x-load-error"])
    assert.matches(NO_YIELD, h["x-remap-error"])
    assert.matches(NO_YIELD, h["x-global-error"])
    assert.matches(NO_YIELD, h["x-gsub-error"])
    local line = wait_for(5, function() return close_log():match("/errors [^\n]*") end)
    assert.matches("close_err=" .. NO_YIELD:sub(2), line)
  end)

  it("raises on bad arguments", function()
    local e = get("/errors")["x-arg-error"]
    assert.matches("^ts_ffi%.dns%.lookup: expects a host name string %(got number%)", e)
    assert.matches("| ts_ffi%.dns%.lookup: takes one argument, a host name %(got 0%)", e)
    assert.matches("| ts_ffi%.dns%.lookup: takes one argument, a host name %(got 2%)", e)
  end)

  it("keeps running and logs no crash", function()
    assert.is_true(sb:alive())
    assert.falsy(sb:log("diags.log"):find("FATAL", 1, true))
    assert.falsy(sb:log("diags.log"):find("Segmentation", 1, true))
  end)
end)
