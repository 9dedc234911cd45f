-- ts_ffi.tcpinfo with the JIT off: client()/server() are C closures (src/tcpinfo.rs run) that
-- answer the table (through a builder made from src/tcpinfo.rs FIELDS) and one field
-- natively, and must answer what the Lua/FFI wrapper answers; anything but success goes to
-- the wrapper.
local double = require "support.double"
local socket = require "socket"
local jit = require "jit"

local MODULES = { "ts_ffi.base", "ts_ffi.tcpinfo" }

local tcp_pair = require "support.tcp_pair"

-- Fields that do not move between two calls on an idle connection.
local STABLE = { "state", "ca_state", "options", "snd_wscale", "rcv_wscale", "snd_mss",
  "rcv_mss", "pmtu", "advmss", "total_retrans", "bytes_received", "segs_in", "data_segs_in",
  "delivery_rate_app_limited", "fastopen_client_fail" }

describe("ts_ffi.tcpinfo, interpreted path (JIT off)", function()
  local jitted, interp, saved, c, a

  setup(function()
    saved = {}
    for _, m in ipairs(MODULES) do saved[m] = package.loaded[m] end
    jitted = require "ts_ffi.tcpinfo"
    for _, m in ipairs(MODULES) do package.loaded[m] = nil end
    jit.off()
    jit.flush()
    interp = require "ts_ffi.tcpinfo"
  end)

  teardown(function()
    jit.on()
    for _, m in ipairs(MODULES) do package.loaded[m] = saved[m] end
  end)

  before_each(function() c, a = tcp_pair() end)
  after_each(function() c:close(); a:close() end)

  it("uses C functions", function()
    assert.equal("C", debug.getinfo(interp.client, "S").what)
    assert.equal("C", debug.getinfo(interp.server, "S").what)
  end)

  it("returns the same table as the JIT path's wrapper", function()
    for _, which in ipairs { "client", "server" } do
      -- interp first, on its own transaction: its first call stores the box (through the
      -- wrapper), the second is answered by the C closure alone (no Lua of tcpinfo.lua runs)
      local thread = double.new_txn { client_fd = c:getfd(), server_fd = a:getfd() }
      assert.is_true((double.run(thread, interp[which])))
      local ok2, t2, lua_calls = double.run(thread, function()
        local n = 0
        debug.sethook(function()
          if debug.getinfo(2, "S").source:match("tcpinfo%.lua$") then n = n + 1 end
        end, "c")
        local t = interp[which]()
        debug.sethook()
        return t, n
      end)
      assert.equal(0, lua_calls)
      local ok1, t1 = double.run(double.new_txn { client_fd = c:getfd(), server_fd = a:getfd() },
        jitted[which])
      assert.is_true(ok1, t1)
      assert.is_true(ok2, t2)
      local k1, k2 = {}, {}
      for k, v in pairs(t1) do k1[#k1 + 1] = k; assert.equal("number", type(v), k) end
      for k, v in pairs(t2) do k2[#k2 + 1] = k; assert.equal("number", type(v), k) end
      table.sort(k1)
      table.sort(k2)
      assert.same(k1, k2)
      for _, k in ipairs(STABLE) do assert.equal(t1[k], t2[k], which .. " " .. k) end
      assert.equal(1, t2.state)
      assert.is_true(t2.rtt > 0)
    end
  end)

  it("answers one field natively, as the wrapper does", function()
    for _, which in ipairs { "client", "server" } do
      local thread = double.new_txn { client_fd = c:getfd(), server_fd = a:getfd() }
      assert.is_true((double.run(thread, interp[which]))) -- stores the box
      local ok, vals, lua_calls = double.run(thread, function()
        local n, v = 0, {}
        debug.sethook(function()
          if debug.getinfo(2, "S").source:match("tcpinfo%.lua$") then n = n + 1 end
        end, "c")
        for _, k in ipairs(STABLE) do v[k] = interp[which](k) end
        v.rtt = interp[which]("rtt")
        v.snd_wnd = interp[which]("snd_wnd")
        debug.sethook()
        return v, n
      end)
      assert.is_true(ok, vals)
      assert.equal(0, lua_calls)
      local ok1, t1 = double.run(double.new_txn { client_fd = c:getfd(), server_fd = a:getfd() },
        jitted[which])
      assert.is_true(ok1, t1)
      for _, k in ipairs(STABLE) do assert.equal(t1[k], vals[k], which .. " " .. k) end
      assert.is_true(vals.rtt > 0)
      assert.equal("number", type(vals.snd_wnd))
      -- unknown names and extra arguments still raise through the wrapper
      assert.matches("^ts_ffi%.tcpinfo%." .. which .. ": unknown field \"rt\"",
        select(3, double.run(thread, function() return pcall(interp[which], "rt") end)))
      assert.matches("^ts_ffi%.tcpinfo%." .. which .. ": takes no arguments or one field name",
        select(3, double.run(thread, function() return pcall(interp[which], "rtt", 1) end)))
    end
  end)

  it("answers conditions and errors through the wrapper", function()
    local thread, ctx = double.new_txn { client_fd = c:getfd() }
    assert.same({ true, nil, "no origin connection" }, { double.run(thread, interp.server) })
    local u = assert(socket.udp())
    assert(u:setpeername("127.0.0.1", 9))
    double.set_client_fd(ctx, u:getfd())
    local ok, t, err = double.run(thread, interp.client)
    u:close()
    assert.same({ true, nil }, { ok, t })
    assert.matches("^getsockopt%(TCP_INFO%): ", err)
    double.set_client_fd(ctx, -1)
    assert.same({ true, nil, "client connection is gone" }, { double.run(thread, interp.client) })
    local ok2, pok, perr = double.run(thread, function() return pcall(interp.client, 1) end)
    assert.is_true(ok2)
    assert.is_false(pok)
    assert.matches("^ts_ffi%.tcpinfo%.client: unknown field 1 ", perr)
    double.set_client_fd(ctx, c:getfd())
    local ok3, rtt = double.run(thread, interp.client, "rtt")
    assert.is_true(ok3)
    assert.is_true(rtt > 0)
    assert.matches("^ts_ffi%.tcpinfo%.client: no transaction in this context",
      double.error_of(interp.client))
  end)
end)
