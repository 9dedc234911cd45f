local double = require "support.double"
local transform = require "ts_ffi.transform"

-- Runs `fn` as the handler of a fake ts_lua transform of a fresh transaction.
local function in_transform(fn, has_buffer)
  local thread = double.new_txn()
  local tthread, tctx = double.new_transform(thread, fn, has_buffer)
  double.set_cont_info(tthread, tctx)
  return tctx, double.run(tthread, fn)
end

describe("ts_ffi.transform watermark", function()
  it("set_watermark() sets the running transform's input watermark and returns it", function()
    local tctx, ok, v = in_transform(function() return transform.set_watermark(65536) end)
    assert.same({ true, 65536 }, { ok, v })
    -- also where ts_lua re-applies its own setting on every handler entry
    assert.same({ 65536, 65536 }, { double.transform_state(tctx) })
  end)

  it("watermark() reads it", function()
    local _, ok, a, b = in_transform(function()
      local before = transform.watermark()
      transform.set_watermark(4096)
      return before, transform.watermark()
    end)
    assert.same({ true, 0, 4096 }, { ok, a, b })
  end)

  it("returns nil, err when the transform has no input buffer", function()
    local _, ok, v, err = in_transform(function() return transform.watermark() end, false)
    assert.same({ true, nil, "the transform has no input buffer" }, { ok, v, err })
  end)

  it("raises outside a transform handler", function()
    local thread, ctx = double.new_txn()
    local ok, err = double.run(thread, function() return select(2, pcall(transform.watermark)) end)
    assert.matches("^ts_ffi%.transform%.watermark: not inside a ts_lua transform handler", err)
    -- in the transaction's coroutine while __ts_cont_info names a transform (a hook running
    -- after the transform was created): still not the transform's coroutine
    local _, tctx = double.new_transform(thread, function() end)
    double.set_cont_info(thread, tctx)
    ok, err = double.run(thread, function() return select(2, pcall(transform.set_watermark, 1)) end)
    assert.matches("^ts_ffi%.transform%.set_watermark: not inside a ts_lua transform handler", err)
    assert.matches("^ts_ffi%.transform%.watermark: not inside", double.error_of(transform.watermark))
  end)

  it("raises in a coroutine created inside the handler", function()
    local _, ok, err = in_transform(function()
      return select(2, coroutine.resume(coroutine.create(function() return transform.watermark() end)))
    end)
    assert.matches("^ts_ffi%.transform%.watermark: not inside", err)
  end)

  for _, bad in ipairs { -1, 1.5, 0 / 0, math.huge, 2 ^ 31, "10", true, {} } do
    it("set_watermark() raises for " .. tostring(bad), function()
      local _, ok, err = in_transform(function() return select(2, pcall(transform.set_watermark, bad)) end)
      assert.matches("^ts_ffi%.transform%.set_watermark: bad byte count", err)
    end)
  end

  it("set_watermark() raises with a missing or extra argument", function()
    assert.matches("^ts_ffi%.transform%.set_watermark: bad byte count",
      double.error_of(transform.set_watermark))
    assert.matches("^ts_ffi%.transform%.set_watermark: takes one argument",
      double.error_of(transform.set_watermark, 1, 2))
    assert.matches("^ts_ffi%.transform%.watermark: takes no arguments",
      double.error_of(transform.watermark, 1))
  end)
end)

describe("ts_ffi.transform.response / request", function()
  local REQUEST_TRANSFORM, RESPONSE_TRANSFORM, TXN_CLOSE = 6, 7, 10

  for _, which in ipairs { "response", "request" } do
    local fname = "ts_ffi.transform." .. which
    local f = function(...) return transform[which](...) end

    it(which .. "() registers a transform and a TXN_CLOSE cleanup, and keeps ts_lua's context", function()
      local thread, ctx = double.new_txn()
      assert.same({ true, true }, { double.run(thread, f, function(d) return d end, { min_chunk = 10 }) })
      local hooks, has_hook = double.hooks(ctx)
      assert.equal(1, hooks[which == "response" and RESPONSE_TRANSFORM or REQUEST_TRANSFORM])
      assert.equal(1, hooks[TXN_CLOSE])
      assert.equal(1, has_hook)
    end)

    it(which .. "() returns nil, 'too late' once that body has started", function()
      local thread, ctx = double.new_txn()
      double.set_txn(ctx, which == "response" and { response_started = true } or { server_fd = 3 })
      local ok, v, err = double.run(thread, f, function() end)
      assert.same({ true, nil }, { ok, v })
      assert.matches("^too late: this transaction's " .. which .. " body has already started", err)
      assert.same({}, (double.hooks(ctx)))
    end)

    it(which .. "() raises without a transaction", function()
      assert.matches("^" .. fname:gsub("%.", "%%.") .. ": no transaction in this context",
        double.error_of(f, function() end))
    end)

    for _, case in ipairs {
      { "bad handler", nil }, { "bad handler", "f" }, { "bad handler", {} },
      { "bad options", function() end, 5 }, { "bad options", function() end, "x" },
      { "unknown option", function() end, { min = 1 } },
      { "bad min_chunk", function() end, { min_chunk = -1 } },
      { "bad min_chunk", function() end, { min_chunk = 1.5 } },
      { "bad min_chunk", function() end, { min_chunk = 0 / 0 } },
      { "bad min_chunk", function() end, { min_chunk = 2 ^ 40 } },
      { "bad min_chunk", function() end, { min_chunk = "1" } },
      { "takes a handler", function() end, {}, 1 },
    } do
      it(which .. "() raises '" .. case[1] .. "' for bad arguments", function()
        local thread = double.new_txn()
        local _, err = double.run(thread, function()
          return select(2, pcall(f, case[2], case[3], case[4]))
        end)
        assert.matches("^" .. fname:gsub("%.", "%%.") .. ": " .. case[1], err)
      end)
    end
  end
end)
