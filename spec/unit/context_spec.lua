-- The transaction context: lookup, liveness checks, reuse of freed memory, version gate.
local double = require "support.double"
local txn = require "ts_ffi.txn"

local function run_err(thread, fn)
  local ok, pok, err = double.run(thread, function() return pcall(fn) end)
  assert.is_true(ok)
  assert.is_false(pok, "expected an error, got " .. tostring(err))
  return err
end

describe("transaction context", function()
  after_each(function()
    double.set_version(9, 2, 9)
    double.setenv("TS_FFI_ASSUME_ATS", nil)
  end)

  it("registers one watcher on ts_lua's async chain per transaction", function()
    local thread, ctx = double.new_txn()
    double.run(thread, function() txn.id(); txn.client_fd(); txn.id() end)
    assert.equal(1, double.chain_length(ctx))
    assert.equal(1, double.release(ctx)) -- ts_lua runs the cleanup when it releases
  end)

  it("is an error once ts_lua released the context it had seen", function()
    local thread, ctx = double.new_txn()
    double.run(thread, txn.id)
    double.release(ctx)
    assert.matches("^ts_ffi%.txn%.id: no transaction in this context %(ts_lua has released",
      run_err(thread, txn.id))
  end)

  it("never answers another transaction's id from freed, reused memory", function()
    -- seen before release: the record knows it died
    local t1, c1 = double.new_txn()
    double.run(t1, txn.id)
    double.release(c1)
    local t2, c2, id2 = double.new_txn()
    assert.equal(c1, c2) -- the double reuses the freed memory, as malloc may
    assert.matches("has released", run_err(t1, txn.id))
    assert.same({ true, id2 }, { double.run(t2, txn.id) })
  end)

  it("detects a freed and reused context it never saw while alive", function()
    local t1, c1 = double.new_txn()
    double.release(c1)
    local t2, c2, id2 = double.new_txn()
    assert.equal(c1, c2)
    assert.matches("has released", run_err(t1, txn.id))
    assert.same({ true, id2 }, { double.run(t2, txn.id) })
  end)

  it("detects a freed context whose memory was not reused", function()
    local t1, c1 = double.new_txn()
    double.release(c1)
    assert.matches("has released", run_err(t1, txn.id))
  end)

  it("is shared by coroutines created inside the transaction", function()
    local thread, _, id = double.new_txn()
    local ok, a, b = double.run(thread, function()
      local co = coroutine.wrap(function() return txn.id() end)
      return co(), txn.id()
    end)
    assert.same({ true, id, id }, { ok, a, b })
  end)

  it("is refused in a coroutine kept from an ended transaction", function()
    local t1, c1 = double.new_txn()
    local _, co = double.run(t1, function()
      return coroutine.create(function()
        coroutine.yield(txn.id())
        return txn.id()
      end)
    end)
    local _, first = coroutine.resume(co)
    assert.equal("number", type(first))
    double.release(c1)
    local t2 = double.new_txn()
    local ok, res = double.run(t2, function() return coroutine.resume(co) end)
    assert.is_true(ok)
    assert.is_false(res)
  end)

  it("refuses an ATS version whose private layout it does not know, naming it", function()
    double.set_version(10, 0, 0)
    local thread = double.new_txn()
    local err = run_err(thread, txn.id)
    assert.matches("^ts_ffi%.txn%.id: unsupported Apache Traffic Server 10%.0%.0", err)
    assert.matches("TS_FFI_ASSUME_ATS", err)
  end)

  it("accepts an untested version only when the operator names it", function()
    double.set_version(10, 0, 0)
    double.setenv("TS_FFI_ASSUME_ATS", "10.1")
    local thread, _, id = double.new_txn()
    assert.matches("unsupported", run_err(thread, txn.id))
    double.setenv("TS_FFI_ASSUME_ATS", "10.0")
    assert.same({ true, id }, { double.run(thread, txn.id) })
  end)

  it("is an error at load time (the main state has no transaction)", function()
    assert.matches("^ts_ffi%.txn%.id: no transaction in this context", double.error_of(txn.id))
  end)

  it("treats a foreign __ts_http_ctx value as no transaction", function()
    local thread = double.new_txn()
    local err = select(2, double.run(thread, function()
      rawset(getfenv(0), "__ts_http_ctx", "not a pointer")
      return select(2, pcall(txn.id))
    end))
    assert.matches("^ts_ffi%.txn%.id: no transaction in this context", err)
  end)
end)

describe("outside traffic_server", function()
  it("loads, and every call says it is not inside traffic_server", function()
    local p = io.popen("LUA_PATH='build/tree/share/lua/5.1/?.lua;;' "
      .. "LUA_CPATH='build/tree/lib/lua/5.1/?.so;;' luajit -e '"
      .. "for _, f in ipairs{ require(\"ts_ffi.info\").version, require(\"ts_ffi.txn\").id,"
      .. " require(\"ts_ffi.ssn\").id } do print(select(2, pcall(f))) end' 2>&1")
    local out = p:read("*a")
    p:close()
    assert.matches("^ts_ffi%.info%.version: not running inside traffic_server", out)
    assert.matches("\nts_ffi%.txn%.id: not running inside traffic_server", out)
    assert.matches("\nts_ffi%.ssn%.id: not running inside traffic_server", out)
  end)
end)
