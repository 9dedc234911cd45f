-- The JIT path compiles: a hot loop of ts_ffi calls is one trace that loops, with no NYI and
-- no stitching, also after the once-per-transaction slow path (a C function) got hot.
local double = require "support.double"
local jit = require "jit"

describe("JIT traces", function()
  it("compile a hot loop of calls into one looping trace, after many first calls", function()
    local txn, ssn = require "ts_ffi.txn", require "ts_ffi.ssn"
    jit.flush()
    -- many transactions whose only call is the first one: the slow path gets hot
    for _ = 1, 300 do
      double.run((double.new_txn()), function() return txn.client_fd(), txn.id() end)
    end
    local log = os.tmpname()
    local v = require "jit.v"
    v.on(log)
    local thread = double.new_txn { client_fd = 7 }
    local chunk = assert(loadstring([[
      local txn, ssn = ...
      return function()
        local s = 0
        for _ = 1, 2000 do s = s + txn.client_fd() + txn.id() + ssn.id() end
        return s
      end]], "=hot_loop"))(txn, ssn)
    local ok = double.run(thread, chunk)
    v.off()
    local f = io.open(log)
    local text = f:read("*a")
    f:close()
    os.remove(log)
    assert.is_true(ok)
    assert.matches("%[TRACE%s+%d+ hot_loop:4 loop%]", text)
    assert.falsy(text:find("hot_loop:4 -> ", 1, true), text) -- linked elsewhere, not looping
    assert.falsy(text:find("stitch", 1, true), text)
    assert.falsy(text:find("NYI", 1, true), text)
  end)
end)
