-- The hostile-input matrix (spec/support/hostile.lua) against the ATS double: every public
-- function of every module, every hostile argument list, in every context the double can make.
local double = require "support.double"
local hostile = require "support.hostile"

local function assert_clean(rep)
  assert.equal(0, rep.nfail, table.concat(rep.failures, "\n"))
  assert.is_true(rep.calls > 0)
  return rep
end

-- The double's answers for a transaction made by double.new_txn.
local function oracle_for(id)
  local o = {
    ["ts_ffi.txn.id"] = function() return id end,
    ["ts_ffi.ssn.id"] = function() return id + 500000 end,
    ["ts_ffi.txn.client_fd"] = function() return 7 end,
    ["ts_ffi.info.version"] = function() return "9.2.9" end,
    ["ts_ffi.info.config_dir"] = function() return "/double/config" end,
  }
  return o
end

local function in_txn(fn)
  local thread, ctx, id = double.new_txn()
  local ok, rep = double.run(thread, fn, id)
  assert(ok, rep)
  return rep, thread, ctx, id
end

describe("hostile input (ATS double)", function()
  local total = { calls = 0, contexts = 0 }
  local function count(rep)
    total.calls = total.calls + rep.calls
    total.contexts = total.contexts + 1
    return assert_clean(rep)
  end

  teardown(function()
    print(("\n# hostile (double): %d contexts, %d calls, 0 failures"):format(total.contexts, total.calls))
  end)

  it("finds every public module and function, and nothing of base", function()
    local mods = hostile.modules()
    assert.truthy(#mods >= 3)
    for _, m in ipairs(mods) do assert.not_equal("ts_ffi.base", m) end
    assert.truthy(table.concat(mods, " "):find("ts_ffi.txn", 1, true))
  end)

  it("at load time (no transaction): misuse raises with the name, info still works", function()
    count(hostile.run("load", "none", { oracle = oracle_for(0) }))
  end)

  it("inside a transaction: misuse raises, valid calls answer the transaction's values", function()
    local rep = in_txn(function(id) return hostile.run("txn", "txn", { oracle = oracle_for(id) }) end)
    count(rep)
    assert.truthy(rep.targets >= 9)
  end)

  it("in a coroutine created inside the transaction", function()
    count(in_txn(function(id)
      local co = coroutine.wrap(function() return hostile.run("coroutine", "txn", { oracle = oracle_for(id) }) end)
      return co()
    end))
  end)

  it("after ts_lua released the context, seen alive before", function()
    local thread, ctx, id = double.new_txn()
    double.run(thread, function() return hostile.run("txn", "txn", { oracle = oracle_for(id) }) end)
    double.release(ctx)
    local _, rep = double.run(thread, function() return hostile.run("released", "none") end)
    count(rep)
  end)

  it("after ts_lua released the context and another transaction reused its memory", function()
    local t1, c1 = double.new_txn()
    double.release(c1)
    local t2, c2, id2 = double.new_txn()
    assert.equal(c1, c2)
    count(select(2, double.run(t1, function() return hostile.run("reused", "none") end)))
    -- the new owner of the memory is unaffected
    count(select(2, double.run(t2, function()
      return hostile.run("reuser", "txn", { oracle = oracle_for(id2) })
    end)))
  end)

  it("in a coroutine kept from an ended transaction and resumed by a later one", function()
    local t1, c1 = double.new_txn()
    local _, co = double.run(t1, function()
      return coroutine.create(function()
        while true do coroutine.yield(hostile.run("kept", "none")) end
      end)
    end)
    double.release(c1)
    local t2, _, id2 = double.new_txn()
    local ok, cok, rep = double.run(t2, function() return coroutine.resume(co) end)
    assert.is_true(ok and cok)
    count(rep)
    -- and the resuming transaction still gets its own answers
    count(select(2, double.run(t2, function()
      return hostile.run("resumer", "txn", { oracle = oracle_for(id2) })
    end)))
  end)

  it("checks itself: a wrong answer, a missing name and a missing error are reported", function()
    local rep = in_txn(function(id)
      return hostile.run("self-test", "txn", { oracle = oracle_for(id + 1) })
    end)
    assert.truthy(rep.nfail > 0)
    assert.matches("ts_ffi.txn.id = %d+, ts_lua says", table.concat(rep.failures, "\n"))
    local txn = require "ts_ffi.txn"
    local real = txn.id
    txn.id = function() return 1 end -- accepts anything: every misuse "did not raise"
    rep = hostile.run("self-test", "none")
    txn.id = function() error("unnamed") end
    local rep2 = hostile.run("self-test", "none")
    txn.id = real
    assert.matches("ts_ffi.txn.id%(true%) did not raise", table.concat(rep.failures, "\n"))
    assert.matches("ts_ffi.txn.id%(true%) raised \"[^\"]*unnamed\"", table.concat(rep2.failures, "\n"))
  end)
end)
