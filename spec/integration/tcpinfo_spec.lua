-- ts_ffi.tcpinfo inside a real traffic_server: the kernel's tcp_info of the real client and
-- origin sockets, equal to what a hand-written getsockopt says on the fds ts_lua reports.
local ats = require "support.ats"

local S = ats.root .. "/spec/integration/scripts/"

local function parse(s)
  local t = { stable = s:match("^(%S+)") }
  for k, v in s:gmatch("(%S+)=(%S+)") do t[k] = v end
  return t
end

describe("ts_ffi.tcpinfo inside traffic_server", function()
  local sb

  setup(function()
    sb = ats.start { remap = { ["tcpinfo.test"] = S .. "tcpinfo.lua" } }
  end)

  teardown(function()
    if sb then sb:stop() end
  end)

  local function get(path)
    local res = sb:get("tcpinfo.test", path)
    assert(res.status == 200, "status " .. tostring(res.status) .. "\n" .. sb:diagnostics())
    return res.headers
  end

  it("reads the client connection's socket in do_remap and later hooks", function()
    local h = get("/client")
    for _, name in ipairs { "x-remap-client", "x-send-response-client" } do
      local t = parse(h[name])
      local state = t.stable:match("^(%d+)/")
      assert.equal("1", state, h[name]) -- ESTABLISHED
      assert.equal(t.raw, t.stable, h[name]) -- same socket as ts.http.get_client_fd()
      assert.is_true(tonumber(t.rtt) > 0, h[name])
      assert.is_true(tonumber(t.rto) >= 200000, h[name]) -- µs
      assert.is_true(tonumber(t.segs_in) >= 1, h[name]) -- the request came in on it
      assert.is_true(tonumber(t.fields) >= 50, h[name])
    end
  end)

  it("has no origin connection in do_remap", function()
    assert.equal("nil err=no origin connection", get("/remap")["x-remap-server"])
  end)

  it("reads the origin connection's socket in SEND_REQUEST_HDR and READ_RESPONSE_HDR", function()
    local h = get("/server")
    local sent = parse(h["x-send-request-server"])
    assert.equal(sent.raw, sent.stable, h["x-send-request-server"]) -- ts.http.get_server_fd()'s socket
    assert.equal("1", sent.stable:match("^(%d+)/"), h["x-send-request-server"])
    assert.is_true(tonumber(sent.rtt) > 0)
    local got = parse(h["x-read-response-server"])
    assert.equal(got.raw, got.stable, h["x-read-response-server"])
    -- ESTABLISHED, or CLOSE_WAIT once the origin (Connection: close) has closed its side
    assert.matches("^[18]$", got.stable:match("^(%d+)/"))
    assert.is_true(tonumber(got.segs_out) >= 1, h["x-read-response-server"]) -- the request
    assert.is_true(tonumber(got.segs_in) >= 1, h["x-read-response-server"]) -- the response
  end)

  it("raises naming the function at script load time", function()
    assert.matches("^ts_ffi%.tcpinfo%.client: no transaction in this context",
      get("/load")["x-load-error"])
  end)

  it("answers in TXN_CLOSE and keeps traffic_server running", function()
    local log
    for _ = 1, 40 do
      local f = io.open(sb.dir .. "/tcpinfo_close.log")
      log = f and f:read("*a")
      if f then f:close() end
      if log and log ~= "" then break end
      os.execute("sleep 0.05")
    end
    assert.matches("server=[^\n]+ client=[^\n]+", log)
    assert.is_true(sb:alive())
    assert.falsy(sb:log("diags.log"):find("FATAL", 1, true))
  end)
end)
