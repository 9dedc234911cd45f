local double = require "support.double"
local txn = require "ts_ffi.txn"

describe("ts_ffi.txn", function()
  describe("id()", function()
    it("is the transaction's id, a Lua number", function()
      local thread, _, id = double.new_txn()
      local ok, got = double.run(thread, txn.id)
      assert.is_true(ok)
      assert.equal(id, got)
      assert.equal("number", type(got))
    end)

    it("is the same on every call of the transaction", function()
      local thread, _, id = double.new_txn()
      assert.same({ true, id, id, id }, { double.run(thread, function()
        return txn.id(), txn.id(), txn.id()
      end) })
    end)

    it("raises without a transaction", function()
      assert.matches("^ts_ffi%.txn%.id: no transaction in this context", double.error_of(txn.id))
    end)

    it("refuses arguments", function()
      local thread = double.new_txn()
      local ok, err = double.run(thread, function() return pcall(txn.id, {}) end)
      assert.is_true(ok)
      assert.matches("^ts_ffi%.txn%.id: takes no arguments", select(2, double.run(thread,
        function() return select(2, pcall(txn.id, {})) end)))
      assert.is_false(err)
    end)
  end)

  describe("client_fd()", function()
    it("is the client connection's fd", function()
      local thread = double.new_txn { client_fd = 42 }
      assert.same({ true, 42 }, { double.run(thread, txn.client_fd) })
    end)

    it("returns nil, err once the client connection is gone", function()
      local thread, ctx = double.new_txn { client_fd = 5 }
      double.set_client_fd(ctx, -1)
      assert.same({ true, nil, "client connection is gone" }, { double.run(thread, txn.client_fd) })
    end)

    it("raises without a transaction", function()
      assert.matches("^ts_ffi%.txn%.client_fd: no transaction in this context", double.error_of(txn.client_fd))
    end)
  end)
end)

describe("ts_ffi.txn (8.0 API set)", function()
  local function in_txn(setup, fn, ...)
    local thread, ctx = double.new_txn()
    if setup then double.set_txn(ctx, setup) end
    return double.run(thread, fn, ...)
  end

  local function err_in_txn(fn, ...)
    local thread = double.new_txn()
    local args = { ... }
    local ok, err = double.run(thread, function() return select(2, pcall(fn, unpack(args))) end)
    assert.is_true(ok)
    return err
  end

  describe("server_fd()", function()
    it("is the origin connection's fd", function()
      assert.same({ true, 9 }, { in_txn({ server_fd = 9 }, txn.server_fd) })
    end)
    it("returns nil, err without an origin connection", function()
      assert.same({ true, nil, "no origin connection" }, { in_txn(nil, txn.server_fd) })
    end)
  end)

  describe("is_aborted()", function()
    it("is true when ATS says the transaction was aborted (TS_SUCCESS)", function()
      assert.same({ true, true }, { in_txn({ aborted = true }, txn.is_aborted) })
    end)
    it("is false for a transaction that was not", function()
      assert.same({ true, false }, { in_txn(nil, txn.is_aborted) })
    end)
  end)

  describe("next_hop_addr()", function()
    it("is ip, port, family for IPv4 and IPv6", function()
      assert.same({ true, "127.0.0.1", 8080, "inet" },
        { in_txn({ next_hop = { "127.0.0.1", 8080 } }, txn.next_hop_addr) })
      assert.same({ true, "2001:db8::7", 443, "inet6" },
        { in_txn({ next_hop = { "2001:db8::7", 443 } }, txn.next_hop_addr) })
    end)
    it("is nil before a next hop is chosen", function()
      assert.same({ true, nil, "no next hop chosen yet" }, { in_txn(nil, txn.next_hop_addr) })
    end)
  end)

  describe("remap_from_url() / remap_to_url()", function()
    it("are the matched rule's URLs", function()
      local urls = { from_url = "http://a.test/", to_url = "http://127.0.0.1:8080/" }
      assert.same({ true, "http://a.test/", "http://127.0.0.1:8080/" }, { in_txn(urls,
        function() return txn.remap_from_url(), txn.remap_to_url() end) })
    end)
    it("are nil without a remap rule", function()
      assert.same({ true, nil, "no remap rule matched" }, { in_txn(nil, txn.remap_from_url) })
      assert.same({ true, nil, "no remap rule matched" }, { in_txn(nil, txn.remap_to_url) })
    end)
  end)

  describe("set_outgoing_addr() / clear_outgoing_addr()", function()
    it("sets the source address, IPv4 or IPv6, port default 0", function()
      local thread, ctx = double.new_txn()
      assert.same({ true, true }, { double.run(thread, txn.set_outgoing_addr, "127.0.0.3") })
      assert.same({ 1, "127.0.0.3", 0 }, { double.outgoing(ctx) })
      assert.same({ true, true }, { double.run(thread, txn.set_outgoing_addr, "::1", 65535) })
      assert.same({ 2, "::1", 65535 }, { double.outgoing(ctx) })
      assert.same({ true, true }, { double.run(thread, txn.clear_outgoing_addr) })
      assert.same({ 3, "unspec", 0 }, { double.outgoing(ctx) })
    end)

    it("returns nil, err once the origin connection exists (too late)", function()
      local thread, ctx = double.new_txn()
      double.set_txn(ctx, { server_fd = 12 })
      local ok, v, err = double.run(thread, txn.set_outgoing_addr, "127.0.0.3")
      assert.same({ true, nil }, { ok, v })
      assert.matches("^too late", err)
      assert.matches("^too late", select(3, double.run(thread, txn.clear_outgoing_addr)))
      assert.equal(0, (double.outgoing(ctx)))
    end)

    it("returns nil, err when the client session is gone", function()
      local thread, ctx = double.new_txn { ssn_id = false }
      assert.matches("^too late", select(3, double.run(thread, txn.set_outgoing_addr, "127.0.0.3")))
      assert.equal(0, (double.outgoing(ctx)))
    end)

    for _, bad in ipairs { { "300.1.2.3" }, { "1.2.3" }, { "" }, { "1.2.3.4:80" }, { "[::1]" },
                           { "localhost" }, { "1.2.3.4\0" }, { " 1.2.3.4" }, { string.rep("1", 100) },
                           { 42 }, { nil }, { {} }, { true } } do
      it("raises for the address " .. tostring(bad[1]):gsub("%z", "\\0"):sub(1, 20), function()
        assert.matches("^ts_ffi%.txn%.set_outgoing_addr: bad address", err_in_txn(txn.set_outgoing_addr, bad[1]))
      end)
    end

    for _, bad in ipairs { 70000, -1, 1.5, 0 / 0, math.huge, -math.huge, 2 ^ 53, "80", true, {} } do
      it("raises for the port " .. tostring(bad), function()
        assert.matches("^ts_ffi%.txn%.set_outgoing_addr: bad port",
          err_in_txn(txn.set_outgoing_addr, "127.0.0.3", bad))
      end)
    end

    it("raises for extra arguments and without a transaction", function()
      assert.matches("^ts_ffi%.txn%.set_outgoing_addr: takes an address",
        err_in_txn(txn.set_outgoing_addr, "127.0.0.3", 1, 2))
      assert.matches("^ts_ffi%.txn%.clear_outgoing_addr: takes no arguments",
        err_in_txn(txn.clear_outgoing_addr, 1))
      assert.matches("^ts_ffi%.txn%.set_outgoing_addr: no transaction in this context",
        double.error_of(txn.set_outgoing_addr, "127.0.0.3"))
    end)
  end)

  for _, name in ipairs { "server_fd", "is_aborted", "next_hop_addr", "remap_from_url",
                          "remap_to_url", "clear_outgoing_addr" } do
    it(name .. "() raises without a transaction and with arguments", function()
      assert.matches("^ts_ffi%.txn%." .. name .. ": no transaction in this context",
        double.error_of(txn[name]))
      assert.matches("^ts_ffi%.txn%." .. name .. ": takes no arguments", err_in_txn(txn[name], 1))
    end)
  end
end)
