-- ts_ffi.waf on the ATS double: the Lua/argument layer and real rule loading (libmodsecurity
-- needs no traffic_server to load rules; running transactions needs the real one, see
-- spec/integration/waf_spec.lua).
local double = require "support.double"
local waf = require "ts_ffi.waf"

local function tmpfile(text)
  local name = os.tmpname()
  local f = assert(io.open(name, "w"))
  f:write(text)
  f:close()
  return name
end

describe("ts_ffi.waf", function()
  describe("base_conf", function()
    it("is the installed base configuration, and it loads", function()
      local f = assert(io.open(waf.base_conf))
      assert.truthy(f:read("*a"):find("SecRuleEngine On", 1, true))
      f:close()
      local e = assert(waf.new { files = { waf.base_conf } })
      assert.is_true(e.rules >= 4)
    end)
  end)

  describe("version()", function()
    it("names libmodsecurity 3", function()
      assert.matches("^ModSecurity v3%.", (waf.version()))
    end)
  end)

  describe("new()", function()
    it("loads files (shell patterns too) and inline rules; rules is the count", function()
      local e = assert(waf.new {
        files = { waf.base_conf, "/etc/modsecurity/crs/crs-setup.conf",
                  "/usr/share/modsecurity-crs/rules/*.conf" },
        rules = 'SecRule ARGS:testparam "@contains test" "id:1234,deny,status:403"',
      })
      assert.is_true(e.rules > 800, e.rules)
      assert.equal("number", type(e.id))
    end)

    it("hands out the same engine for the same sources, a new one when they differ", function()
      local name = tmpfile('SecRuleEngine On\nSecRule ARGS "@contains a" "id:77,deny"\n')
      local a = assert(waf.new { files = { name } })
      local b = assert(waf.new { files = { name } })
      local c = assert(waf.new { files = { name }, rules = 'SecRule ARGS "@contains b" "id:78,deny"' })
      assert.equal(a.id, b.id)
      assert.not_equal(a.id, c.id)
      assert.equal(2, c.rules)
      os.remove(name)
    end)

    it("an engine is freed when its last holder lets go", function()
      local name = tmpfile('SecRuleEngine On\nSecRule ARGS "@contains q" "id:79,deny"\n')
      collectgarbage()
      local before = waf.live_engines()
      local e = assert(waf.new { files = { name } })
      assert.equal(before + 1, waf.live_engines())
      e = nil
      collectgarbage()
      collectgarbage()
      assert.equal(before, waf.live_engines())
      os.remove(name)
    end)

    it("a rules error is nil, err naming the file and the line", function()
      local name = tmpfile('SecRuleEngine On\n\nSecRule ARGS "@contains x" "id:5,deny,nosuchaction"\n')
      local e, err = waf.new { files = { name } }
      assert.is_nil(e)
      assert.equal(name .. ": ", err:sub(1, #name + 2))
      assert.truthy(err:find("Line: 3", 1, true), err)
      os.remove(name)
    end)

    it("an inline rules error names the inline rules", function()
      local e, err = waf.new { rules = 'SecRule ARGS "@contains x" "id:6,deny,nosuchaction"' }
      assert.is_nil(e)
      assert.matches("^rules: ", err)
    end)

    it("a missing file or a pattern matching nothing is nil, err", function()
      local e, err = waf.new { files = { "/nonexistent/ts_ffi.conf" } }
      assert.is_nil(e)
      assert.matches("^/nonexistent/ts_ffi%.conf: ", err)
      e, err = waf.new { files = { "/nonexistent/*.conf" } }
      assert.is_nil(e)
      assert.equal("/nonexistent/*.conf: no file matches this pattern", err)
    end)

    it("raises on bad arguments", function()
      local cases = {
        { nil, "bad argument %(a table" },
        { "x.conf", "bad argument %(a table" },
        { {}, "no rules: give files, rules or both" },
        { { files = "x.conf" }, "bad files %(a list of file names expected, got \"x.conf\"%)" },
        { { files = { 1 } }, "bad files%[1%] %(a file name expected, got 1%)" },
        { { files = { "" } }, "bad files%[1%]" },
        { { files = { a = "x" } }, "bad files %(a list expected; it has the key \"a\"%)" },
        { { rules = 5 }, "bad rules %(a string expected, got 5%)" },
        { { rules = "x", limit = 1 }, "unknown field \"limit\"" },
      }
      for _, c in ipairs(cases) do
        assert.matches("^ts_ffi%.waf%.new: " .. c[2], double.error_of(waf.new, c[1]))
      end
      assert.matches("^ts_ffi%.waf%.new: takes one argument",
        double.error_of(waf.new, { rules = "x" }, 2))
    end)
  end)

  describe("engine:protect()", function()
    local engine = assert(waf.new { rules = 'SecRule ARGS "@contains x" "id:90,deny"' })

    it("raises without a transaction", function()
      assert.matches("^ts_ffi%.waf%.protect: no transaction in this context",
        double.error_of(engine.protect, engine))
    end)

    it("raises when not called as a method", function()
      assert.matches("^ts_ffi%.waf%.protect: call it as engine:protect",
        double.error_of(engine.protect, {}))
    end)

    it("raises on bad options", function()
      local thread = double.new_txn()
      local cases = {
        { "open", "bad options %(a table expected, got \"open\"%)" },
        { { fail = "maybe" }, 'bad fail %("open" or "closed" expected, got "maybe"%)' },
        { { response = "yes" }, "bad response %(a boolean expected" },
        { { body = true }, "unknown option \"body\"" },
        { { request_body = "no" }, "bad request_body %(a boolean expected" },
        { { request_body_limit = -1 }, "bad request_body_limit %(a byte count >= 0 expected, got %-1%)" },
        { { request_body_limit = 1.5 }, "bad request_body_limit %(a byte count >= 0 expected" },
        { { request_body_limit = "1k" }, "bad request_body_limit %(a byte count >= 0 expected" },
        { { response_body_limit = -1 }, "bad response_body_limit %(a byte count from 0 to 2%^31 expected, got %-1%)" },
        { { response_body_limit = 2^40 }, "bad response_body_limit %(a byte count from 0 to 2%^31 expected" },
        { { response_body_types = "text/html" }, "bad response_body_types %(a list of media types expected, got \"text/html\"%)" },
        { { response_body_types = { "text/html", "html" } }, "bad response_body_types%[2%] %(a media type such as \"text/html\" expected, got \"html\"%)" },
        { { response_body_types = { "text/html; charset=utf-8" } }, "bad response_body_types%[1%] %(a media type" },
        { { response_body_types = { "text/html", x = "text/xml" } }, "bad response_body_types %(a list expected; it has the key \"x\"%)" },
      }
      for _, c in ipairs(cases) do
        local ok, err = double.run(thread, function()
          return select(2, pcall(engine.protect, engine, c[1]))
        end)
        assert.is_true(ok)
        assert.matches("^ts_ffi%.waf%.protect: " .. c[2], err)
      end
    end)

    it("names the missing ATS function where the double lacks one", function()
      local thread = double.new_txn()
      local ok, err = double.run(thread, function()
        return select(2, pcall(engine.protect, engine))
      end)
      assert.is_true(ok)
      assert.matches("^ts_ffi%.waf%.protect: .* is missing from this traffic_server", err)
    end)
  end)
end)
