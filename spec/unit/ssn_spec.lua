local double = require "support.double"
local ssn = require "ts_ffi.ssn"

describe("ts_ffi.ssn", function()
  it("id() is the client session's id, a Lua number", function()
    local thread = double.new_txn { ssn_id = 77 }
    assert.same({ true, 77 }, { double.run(thread, ssn.id) })
  end)

  it("id() returns nil, err when the transaction has no client session", function()
    local thread = double.new_txn { ssn_id = false }
    assert.same({ true, nil, "no client session" }, { double.run(thread, ssn.id) })
  end)

  it("id() raises without a transaction, and with arguments", function()
    assert.matches("^ts_ffi%.ssn%.id: no transaction in this context", double.error_of(ssn.id))
    local thread = double.new_txn()
    local ok, err = double.run(thread, function() return select(2, pcall(ssn.id, 1)) end)
    assert.is_true(ok)
    assert.matches("^ts_ffi%.ssn%.id: takes no arguments %(got 1%)", err)
  end)
end)
