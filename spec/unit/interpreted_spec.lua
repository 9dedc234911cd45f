-- The interpreted path (JIT off when ts_ffi is loaded): the public functions are C closures
-- (src/fast.rs) that must answer exactly what the JIT path's Lua/FFI wrappers answer, fall
-- back to them for everything but the common case, and trust no forged box.
local double = require "support.double"
local jit = require "jit"

local MODULES = { "ts_ffi.base", "ts_ffi.txn", "ts_ffi.ssn" }

local function fresh()
  for _, m in ipairs(MODULES) do package.loaded[m] = nil end
  return require "ts_ffi.txn", require "ts_ffi.ssn", require "ts_ffi.base"
end

local function run_err(thread, fn, ...)
  local args = { n = select("#", ...), ... }
  local ok, pok, err = double.run(thread, function() return pcall(fn, unpack(args, 1, args.n)) end)
  assert.is_true(ok)
  assert.is_false(pok, "expected an error, got " .. tostring(err))
  return err
end

describe("interpreted path (JIT off)", function()
  local txn, ssn, base, saved

  setup(function()
    saved = {}
    for _, m in ipairs(MODULES) do saved[m] = package.loaded[m] end
    jit.off()
    jit.flush()
    txn, ssn, base = fresh()
  end)

  teardown(function()
    jit.on()
    for _, m in ipairs(MODULES) do package.loaded[m] = saved[m] end
  end)

  it("uses C functions for the hot calls", function()
    assert.is_true(base.interpreted)
    for _, f in ipairs { txn.id, txn.client_fd, ssn.id } do
      assert.is_nil(debug.getinfo(f, "S").source:match("%.lua$"))
      assert.equal("C", debug.getinfo(f, "S").what)
    end
  end)

  it("answers what the JIT path answers, on first and later calls", function()
    local thread, _, id = double.new_txn { client_fd = 42 }
    local ok, a, b, fd, s = double.run(thread, function()
      return txn.id(), txn.id(), txn.client_fd(), ssn.id()
    end)
    assert.is_true(ok)
    assert.equal(id, a)
    assert.equal(id, b)
    assert.equal(42, fd)
    assert.equal("number", type(s))
    assert.same({ true, s }, { double.run(thread, ssn.id) })
  end)

  it("returns nil, err for conditions", function()
    local thread, ctx = double.new_txn { client_fd = 5 }
    assert.same({ true, 5 }, { double.run(thread, txn.client_fd) })
    double.set_client_fd(ctx, -1)
    assert.same({ true, nil, "client connection is gone" }, { double.run(thread, txn.client_fd) })
  end)

  it("raises named errors: arguments, no transaction, released context", function()
    local thread, ctx = double.new_txn()
    local err = run_err(thread, function()
      local v = txn.id(1) -- the line the message names, past the C closure
      return v
    end)
    assert.matches("^ts_ffi%.txn%.id: takes no arguments %(got 1%)", err)
    assert.matches("interpreted_spec%.lua:%d+%)$", err)
    assert.matches("^ts_ffi%.ssn%.id: takes no arguments", run_err(thread, ssn.id, nil))
    assert.matches("^ts_ffi%.txn%.client_fd: no transaction in this context",
      double.error_of(txn.client_fd))
    double.run(thread, txn.id)
    double.release(ctx)
    assert.matches("^ts_ffi%.txn%.id: no transaction in this context %(ts_lua has released",
      run_err(thread, txn.id))
    assert.matches("has released", run_err(thread, ssn.id))
  end)

  it("never answers from a freed and reused context", function()
    local t1, c1 = double.new_txn()
    double.run(t1, txn.id)
    double.release(c1)
    local t2, c2, id2 = double.new_txn()
    assert.equal(c1, c2)
    assert.matches("has released", run_err(t1, txn.id))
    assert.same({ true, id2 }, { double.run(t2, txn.id) })
  end)

  it("ignores a forged box and answers through the checked path", function()
    local thread, _, id = double.new_txn()
    local key = require("ts_ffi").box_key
    for _, forged in ipairs { io.stdout, newproxy(true), 12345, "x", {}, 5LL } do
      local ok, got = double.run(thread, function()
        rawset(getfenv(0), key, forged)
        return txn.id()
      end)
      assert.is_true(ok)
      assert.equal(id, got)
    end
  end)

  it("keeps a box per transaction and releases it with the environment", function()
    local thread, ctx = double.new_txn()
    double.run(thread, txn.id)
    assert.equal(1, double.chain_length(ctx))
    collectgarbage()
    assert.equal(1, double.release(ctx))
  end)
end)
