-- ts_ffi.dns.lookup on the ATS double: arguments, the contexts it refuses, and the
-- suspend/resume protocol with ts_lua (inline answers, pending answers, release while pending).
local double = require "support.double"
local dns = require "ts_ffi.dns"

local NO_YIELD = "^ts_ffi%.dns%.lookup: cannot yield here %(do_remap, do_global_%* functions"
local NOT_PLUGINS = "^ts_ffi%.dns%.lookup: cannot yield here %(the running coroutine is not the one"

local function stats() return double.dns_stats() end

describe("ts_ffi.dns.lookup", function()
  before_each(function()
    double.dns_mode("pending")
    double.dns_answer(nil) -- forget a lookup a failed test left pending
  end)

  describe("arguments", function()
    local function arg_err(...)
      local thread = double.new_txn()
      local args = { n = select("#", ...), ... }
      local ok, pok, err = double.run(thread, function()
        return pcall(dns.lookup, unpack(args, 1, args.n))
      end)
      assert.is_true(ok)
      assert.is_false(pok)
      return err
    end

    it("raises on a missing, extra or non-string argument, naming the function", function()
      assert.matches("^ts_ffi%.dns%.lookup: takes one argument, a host name %(got 0%)", arg_err())
      assert.matches("^ts_ffi%.dns%.lookup: takes one argument, a host name %(got 2%)",
        arg_err("a.test", "b.test"))
      assert.matches("^ts_ffi%.dns%.lookup: expects a host name string %(got number%)", arg_err(1))
      assert.matches("^ts_ffi%.dns%.lookup: expects a host name string %(got nil%)", arg_err(nil))
      assert.matches("^ts_ffi%.dns%.lookup: expects a host name string %(got table%)", arg_err({}))
    end)

    it("answers nil, err for names HostDB must not see, without asking it", function()
      local before = stats().lookups
      local thread = double.new_txn()
      local long = string.rep("a", 255)
      assert.same({ true, nil, "invalid host name", nil, "invalid host name", nil,
        "invalid host name" },
        { double.run(thread, function()
          local a, b = dns.lookup("")
          local c, d = dns.lookup("a\0b")
          return a, b, c, d, dns.lookup(long)
        end) })
      assert.equal(before, stats().lookups)
    end)
  end)

  describe("contexts", function()
    it("raises 'cannot yield here' at load time (main state)", function()
      local err = select(2, pcall(string.gsub, "x", "x", function() return dns.lookup("a.test") end))
      assert.matches(NO_YIELD, err)
    end)

    it("raises 'cannot yield here' under lua_pcall, as in do_remap and TXN_CLOSE", function()
      local thread = double.new_txn()
      local ok, err = double.call(thread, dns.lookup, "a.test")
      assert.is_false(ok)
      assert.matches(NO_YIELD, err)
      assert.is_false(stats().pending)
    end)

    it("refuses a coroutine the script created, and starts no lookup", function()
      local thread = double.new_txn()
      local before = stats().lookups
      local ok, cok, err = double.run(thread, function()
        return coroutine.resume(coroutine.create(function() return dns.lookup("a.test") end))
      end)
      assert.is_true(ok)
      assert.is_false(cok)
      assert.matches(NOT_PLUGINS, err)
      assert.equal(before, stats().lookups)
    end)

    it("refuses a coroutine without a transaction", function()
      local co = coroutine.create(function() return pcall(dns.lookup, "a.test") end)
      local _, pok, err = coroutine.resume(co)
      assert.is_false(pok)
      assert.matches(NOT_PLUGINS, err)
    end)

    it("refuses a context ts_lua has released", function()
      local thread, ctx = double.new_txn()
      double.release(ctx)
      local ok, pok, err = double.run(thread, function() return pcall(dns.lookup, "a.test") end)
      assert.is_true(ok)
      assert.is_false(pok)
      assert.matches("^ts_ffi%.dns%.lookup: no transaction in this context %(ts_lua has released", err)
    end)

    it("refuses an ATS version whose private layout it does not know", function()
      double.set_version(10, 0, 0)
      local thread = double.new_txn()
      local _, _, err = double.run(thread, function() return pcall(dns.lookup, "a.test") end)
      double.set_version(9, 2, 9)
      assert.matches("^ts_ffi%.dns%.lookup: unsupported Apache Traffic Server 10%.0%.0", err)
    end)
  end)

  describe("answers", function()
    it("answers literal addresses at once, canonical, without HostDB", function()
      local thread = double.new_txn()
      local before = stats().lookups
      assert.same({ true, "127.0.0.1", "::1", "2001:db8::1" }, { double.run(thread, function()
        return dns.lookup("127.0.0.1"), dns.lookup("0:0::1"), dns.lookup("2001:DB8::1")
      end) })
      assert.equal(before, stats().lookups)
    end)

    it("returns an inline HostDB answer without yielding, and cleans up", function()
      local s0 = stats()
      local thread, ctx = double.new_txn()
      double.dns_mode("inline", "10.0.0.9")
      assert.same({ true, "done", "10.0.0.9" },
        { double.run(thread, function() return "done", dns.lookup("a.test") end) })
      double.dns_mode("inline", "fd00::9")
      assert.same({ true, "fd00::9" }, { double.run(thread, dns.lookup, "b.test") })
      double.dns_mode("inline") -- HostDB has no address
      assert.same({ true, nil, "host not found" }, { double.run(thread, dns.lookup, "c.test") })
      local s = stats()
      assert.equal(s0.resumes, s.resumes)
      assert.equal(s.conts, s.destroyed)
      -- finished items: ts_lua runs no cleanup for them
      assert.equal(0, double.release(ctx))
    end)

    it("suspends the coroutine until the answer, then resumes it with it, VM lock held",
      function()
        local s0 = stats()
        local thread, ctx = double.new_txn()
        local ok = double.run(thread, function()
          local a = dns.lookup("a.test")
          local b, err = dns.lookup("b.test")
          return "done", a, b, err
        end)
        assert.is_false(ok) -- not finished: suspended
        assert.equal("suspended", coroutine.status(thread))
        assert.is_true(stats().pending)
        local delivered, status, token = double.dns_answer("10.1.1.1")
        assert.same({ true, 1, "userdata" }, { delivered, status, type(token) }) -- waits for b
        assert.same({ true, 0, "done", "10.1.1.1", nil, "host not found" },
          { double.dns_answer(nil) })
        local s = stats()
        assert.equal(s0.resumes + 2, s.resumes)
        assert.equal(s0.resumed_locked + 2, s.resumed_locked)
        assert.equal(0, s.vm_lock_depth)
        assert.equal(s.conts, s.destroyed)
        assert.equal(0, double.release(ctx)) -- the lookups' items are finished
      end)

    it("resumes nothing when the coroutine does not wait for that very lookup", function()
      local native = require "ts_ffi"
      local s0 = stats()
      local thread = double.new_txn()
      -- the native start called without yielding its token (bypassing the wrapper), then the
      -- coroutine waits for something else
      local ok = double.run(thread, function()
        assert(type(native.dns_lookup("a.test")) == "userdata")
        return coroutine.yield("something else")
      end)
      assert.is_false(ok)
      assert.same({ true, -1 }, { double.dns_answer("10.0.0.1") }) -- handled, no resume
      local s = stats()
      assert.equal(s0.resumes, s.resumes)
      assert.equal(s.conts, s.destroyed)
      assert.equal(0, s.vm_lock_depth)
      -- a coroutine that already finished is not resumed either
      local thread2 = double.new_txn()
      assert.is_true(double.run(thread2, function()
        assert(type(native.dns_lookup("b.test")) == "userdata")
      end))
      assert.same({ true, -1 }, { double.dns_answer("10.0.0.2") })
      assert.equal(s0.resumes, stats().resumes)
    end)

    it("answers nil, err for an unexpected event", function()
      local thread = double.new_txn()
      double.run(thread, function() return "done", dns.lookup("a.test") end)
      assert.same({ true, 0, "done", nil, "lookup failed" }, { double.dns_answer("10.0.0.1", 2) })
    end)

    it("cancels a pending lookup when ts_lua releases the transaction first", function()
      local s0 = stats()
      local thread, ctx = double.new_txn()
      double.run(thread, function() return dns.lookup("a.test") end)
      assert.is_true(stats().pending)
      assert.equal(1, double.release(ctx)) -- the pending lookup's cleanup
      local s = stats()
      assert.equal(s0.cancels + 1, s.cancels)
      assert.equal(s.conts, s.destroyed)
      -- HostDB never calls a cancelled lookup back; nothing is resumed
      assert.same({ false }, { double.dns_answer("10.0.0.1") })
      assert.equal(s0.resumes, stats().resumes)
    end)
  end)
end)
