-- The 8.0 API set inside a real traffic_server, each call checked by its effect: the origin's
-- view of the source address, the fd being the real socket, the abort, the watermark.
local ats = require "support.ats"

local S = ats.root .. "/spec/integration/scripts/"

describe("8.0 API set inside traffic_server", function()
  local sb

  setup(function()
    sb = ats.start {
      remap = { ["api.test"] = S .. "api80.lua", ["wm.test"] = S .. "watermark.lua" },
    }
  end)

  teardown(function()
    if sb then sb:stop() end
  end)

  local function get(path)
    local res = sb:get("api.test", path)
    assert(res.status == 200, "status " .. tostring(res.status) .. "\n" .. sb:diagnostics())
    return res.headers
  end

  local function origin_peer_ip(h)
    return (h["x-origin-peer"] or ""):match("^([^:]+):")
  end

  it("remap_from_url / remap_to_url: the matched rule, as ts_lua says, also in later hooks", function()
    local h = get("/r")
    local expect = "http://api.test/,http://127.0.0.1:" .. sb.origin_port .. "/"
    assert.equal(expect, h["x-remap-urls"])
    assert.equal(h["x-ts-remap-urls"], h["x-remap-urls"])
    assert.equal(expect, h["x-sreq-remap"])
  end)

  it("server_fd: nil, err before the origin connection; then the real origin socket", function()
    local h = get("/fd")
    assert.equal("nil,no origin connection", h["x-remap-server-fd"])
    local fd = h["x-sreq-server-fd"]:match("^(%d+),nil$")
    assert.truthy(fd, h["x-sreq-server-fd"])
    assert.equal(h["x-sreq-ts-server-fd"], fd)
    -- the socket's peer is the origin, and its local end is what the origin saw
    assert.equal("127.0.0.1:" .. sb.origin_port, h["x-sreq-fd-peer"])
    assert.equal(h["x-origin-peer"], h["x-sreq-fd-local"])
  end)

  it("next_hop_addr: nil before one is chosen, then the origin (as ts_lua, with family names)", function()
    local h = get("/nh")
    assert.equal("nil,no next hop chosen yet", h["x-remap-next-hop"])
    assert.equal("127.0.0.1," .. sb.origin_port .. ",inet", h["x-sreq-next-hop"])
    assert.equal("127.0.0.1," .. sb.origin_port .. ",2", h["x-sreq-ts-next-hop"]) -- AF_INET
  end)

  it("set_outgoing_addr: the origin sees the new source address", function()
    local h = get("/o?src=127.0.0.3")
    assert.equal("true", h["x-set"])
    assert.equal("127.0.0.3", origin_peer_ip(h))
    assert.equal("127.0.0.1", origin_peer_ip(get("/o")))
  end)

  it("set_outgoing_addr with a port: the origin sees that port", function()
    local port = ats.free_port()
    local h = get("/o?src=127.0.0.5&port=" .. port)
    assert.equal("true", h["x-set"])
    assert.equal("127.0.0.5:" .. port, h["x-origin-peer"])
  end)

  it("the setting stays with the client connection until clear_outgoing_addr", function()
    local r = sb:get_sequence("api.test", { "/k1?src=127.0.0.4", "/k2", "/k3?clear=1", "/k4" })
    assert.equal("127.0.0.4", origin_peer_ip(r[1].headers))
    assert.equal("127.0.0.4", origin_peer_ip(r[2].headers)) -- same keep-alive connection
    assert.equal("true", r[3].headers["x-set"])
    assert.equal("127.0.0.1", origin_peer_ip(r[3].headers))
    assert.equal("127.0.0.1", origin_peer_ip(r[4].headers))
  end)

  it("set_outgoing_addr / clear_outgoing_addr: nil, 'too late' once the origin connection exists", function()
    local h = get("/late")
    assert.matches("^nil,too late", h["x-sreq-too-late"])
    assert.matches("^nil,too late", h["x-sreq-clear-too-late"])
    assert.equal("127.0.0.1", origin_peer_ip(h)) -- and nothing changed
  end)

  it("set_outgoing_addr raises for bad addresses and ports, naming itself", function()
    local h = get("/bad")
    assert.matches("^ts_ffi%.txn%.set_outgoing_addr: bad address", h["x-bad-addr"])
    assert.matches("^ts_ffi%.txn%.set_outgoing_addr: bad port", h["x-bad-port"])
  end)

  it("is_aborted: true for a client that hangs up mid-response, false for a completed one", function()
    get("/done")
    sb:get("api.test", "/slow-chunked/400000/1000/10", { timeout = 1 })
    local log
    for _ = 1, 60 do
      local f = io.open(sb.dir .. "/api80_close.log")
      log = f and f:read("*a") or ""
      if f then f:close() end
      if log:find("/slow-chunked/", 1, true) then break end
      os.execute("sleep 0.1")
    end
    assert.matches("/done aborted=false", log)
    assert.matches("/slow%-chunked/400000/1000/10 aborted=true", log)
    -- ts_lua 9.2 reads TSHttpTxnAborted backwards
    assert.matches("/done aborted=false ts_lua=1", log)
    assert.matches("aborted=true ts_lua=0", log)
    assert.equal("false", get("/x")["x-remap-aborted"])
  end)

  it("transform watermark: set on the first call, still in force on later calls", function()
    local res = sb:get("wm.test", "/slow-chunked/5000/1000/20")
    assert.equal(200, res.status)
    local calls = {}
    for m in res.body:gmatch("%[wm ([^%]]*)%]") do calls[#calls + 1] = m end
    assert.is_true(#calls >= 2, res.body)
    assert.matches("^before=0 set=65536 ", calls[1])
    assert.matches("after=65536$", calls[1])
    for i = 2, #calls do
      assert.equal("before=65536 after=65536", calls[i])
    end
    -- outside a transform handler it raises, naming itself
    assert.matches("remap_error=<ts_ffi%.transform%.watermark: not inside a ts_lua transform handler", calls[1])
    assert.matches("load_error=<ts_ffi%.transform%.watermark: not inside a ts_lua transform handler", calls[1])
  end)

  it("keeps running", function()
    assert.is_true(sb:alive())
  end)
end)
