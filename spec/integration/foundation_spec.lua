-- The foundation inside a real traffic_server: ts_ffi.info / txn / ssn answer what ts_lua
-- answers, in remap, hook, TXN_CLOSE, coroutine and global contexts; calls without a
-- transaction are errors naming the function; stale contexts are never acted on.
local ats = require "support.ats"

local S = ats.root .. "/spec/integration/scripts/"

local function fields(s)
  local t = {}
  for k, v in tostring(s):gmatch("(%S+)=(%S+)") do t[k] = v end
  return t
end

describe("foundation inside traffic_server", function()
  local sb

  setup(function()
    sb = ats.start {
      remap = {
        ["foundation.test"] = S .. "foundation.lua",
        ["transform-only.test"] = S .. "transform_only.lua",
        ["transform-hooked.test"] = S .. "transform_hooked.lua",
        ["plain.test"] = {},
      },
      global = S .. "global.lua",
    }
  end)

  teardown(function()
    if sb then sb:stop() end
  end)

  local function get(host, path)
    local res = sb:get(host, path)
    assert(res.status == 200, "status " .. tostring(res.status) .. "\n" .. sb:diagnostics())
    return res
  end

  local function assert_same_as_ts_lua(snapshot, where)
    local f = fields(snapshot)
    assert.equal(where, snapshot:match("^%S+"))
    assert.truthy(tonumber(f.id), snapshot)
    assert.equal(f.ts_id, f.id)
    assert.equal(f.ts_ssn, f.ssn)
    assert.equal(f.ts_fd, f.fd)
    -- the fd is the client's socket: its peer is the client's address
    assert.equal(f.client_port, f.fd_peer)
  end

  it("answers what ts_lua answers in do_remap, a hook and TXN_CLOSE", function()
    local res = get("foundation.test", "/a")
    assert_same_as_ts_lua(res.headers["x-remap"], "remap")
    assert_same_as_ts_lua(res.headers["x-hook"], "hook")
    assert.equal(fields(res.headers["x-remap"]).id, fields(res.headers["x-hook"]).id)
    local closed
    for _ = 1, 40 do
      local f = io.open(sb.dir .. "/txn_close.log")
      closed = f and f:read("*a")
      if f then f:close() end
      if closed and closed ~= "" then break end
      os.execute("sleep 0.05")
    end
    assert_same_as_ts_lua(closed:match("[^\n]+"), "close")
    assert.equal(fields(res.headers["x-hook"]).id, fields(closed).id)
  end)

  it("gives each transaction its own id, and sessions their own ids", function()
    local a = fields(get("foundation.test", "/1").headers["x-hook"])
    local b = fields(get("foundation.test", "/2").headers["x-hook"])
    assert.not_equal(a.id, b.id)
    assert.not_equal(a.ssn, b.ssn) -- two curl runs, two client sessions
  end)

  it("reports the version and directories ts_lua reports", function()
    local h = get("foundation.test", "/v").headers
    assert.equal(h["x-ts-version"], h["x-version"])
    assert.equal(h["x-version"], h["x-load-version"])
    local maj, min, pat = h["x-version"]:match("^(%d+)%.(%d+)%.(%d+)")
    assert.equal(maj .. "," .. min .. "," .. pat .. ",3,number", h["x-version-number"])
    assert.equal(h["x-ts-dirs"], h["x-dirs"])
    assert.matches(sb.dir, h["x-dirs"], 1, true)
  end)

  it("raises errors naming the function at load time and in __init__", function()
    local h = get("foundation.test", "/e").headers
    local e = h["x-load-errors"]
    assert.matches("^ts_ffi%.txn%.id: no transaction in this context", e)
    assert.matches("| ts_ffi%.txn%.client_fd: no transaction in this context", e)
    assert.matches("| ts_ffi%.ssn%.id: no transaction in this context", e)
    assert.matches("^ts_ffi%.txn%.id: no transaction in this context", h["x-init-error"])
    assert.matches("^ts_ffi%.txn%.id: takes no arguments", h["x-bad-arg"])
  end)

  it("works in a coroutine the script creates inside the transaction", function()
    local h = get("foundation.test", "/c").headers
    assert.equal("true " .. fields(h["x-hook"]).id, h["x-coroutine"])
  end)

  it("works in do_global_* hooks of a global script", function()
    local h = get("plain.test", "/g").headers
    local read = h["x-global-read"]
    assert.truthy(read, "no X-Global-Read")
    for a, b in read:gmatch("(%S+)/(%S+)") do
      assert.truthy(tonumber(a), read)
      assert.equal(b, a)
    end
    local id, ts_id = h["x-global-send"]:match("(%S+)/(%S+)")
    assert.equal(ts_id, id)
  end)

  -- ts_lua frees the context of a transform-only script after do_remap; under concurrency the
  -- freed memory is reused by other transactions. No call may answer from it.
  for _, early in ipairs { "", "?early=1" } do
    it("never answers from a released context (transform only" .. early .. ", 30 concurrent)",
      function()
        local paths = {}
        for i = 1, 30 do paths[i] = "/slow-chunked/3000/1000/20" .. early end
        local seen = 0
        for _, res in ipairs(sb:get_parallel("transform-only.test", paths)) do
          assert.equal(200, res.status)
          for marker in res.body:gmatch("%[ffi ([^%]]*)%]") do
            seen = seen + 1
            assert.matches("^error=ts_ffi%.txn%.id: no transaction in this context", marker)
          end
        end
        assert.is_true(seen >= 30, "transform calls seen: " .. seen)
        assert.is_true(sb:alive())
      end)
  end

  it("answers the transaction's own id in a transform when the context is kept", function()
    local paths = {}
    for i = 1, 30 do paths[i] = "/slow-chunked/3000/1000/20" end
    local seen = 0
    for _, res in ipairs(sb:get_parallel("transform-hooked.test", paths)) do
      assert.equal(200, res.status)
      for id, remap in res.body:gmatch("%[ffi id=(%d+) remap=(%d+)%]") do
        seen = seen + 1
        assert.equal(remap, id)
      end
      assert.falsy(res.body:find("error=", 1, true))
    end
    assert.is_true(seen >= 30, "transform calls seen: " .. seen)
  end)

  it("keeps running and logs no crash", function()
    assert.is_true(sb:alive())
    assert.equal(200, get("plain.test", "/after").status)
    assert.falsy(sb:log("diags.log"):find("FATAL", 1, true))
    assert.falsy(sb:log("diags.log"):find("Segmentation", 1, true))
  end)
end)

describe("outside traffic_server", function()
  it("loads in plain luajit and says it is not in traffic_server", function()
    local tree = ats.root .. "/build/tree"
    local cmd = "LUA_PATH='" .. tree .. "/share/lua/5.1/?.lua;;' LUA_CPATH='" .. tree
      .. "/lib/lua/5.1/?.so;;' luajit -e 'local i = require \"ts_ffi.info\"; "
      .. "print(select(2, pcall(i.version)))' 2>&1"
    local p = io.popen(cmd)
    local out = p:read("*a")
    p:close()
    assert.matches("^ts_ffi%.info%.version: not running inside traffic_server", out)
  end)
end)
