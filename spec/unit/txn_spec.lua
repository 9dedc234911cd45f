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
