local double = require "support.double"
local info = require "ts_ffi.info"

describe("ts_ffi.info", function()
  after_each(function() double.set_version(9, 2, 9) end)

  it("version() is the running version string", function()
    assert.equal("9.2.9", info.version())
    double.set_version(9, 2, 11)
    assert.equal("9.2.11", info.version())
  end)

  it("version_number() is three Lua numbers", function()
    local a, b, c = info.version_number()
    assert.same({ 9, 2, 9 }, { a, b, c })
    assert.equal("number", type(a))
    assert.equal(3, select("#", info.version_number()))
  end)

  it("returns the directories ATS reports", function()
    assert.equal("/double/install", info.install_dir())
    assert.equal("/double/config", info.config_dir())
    assert.equal("/double/runtime", info.runtime_dir())
    assert.equal("/double/plugins", info.plugin_dir())
  end)

  it("needs no transaction and works inside one too", function()
    assert.equal("9.2.9", double.in_txn(info.version))
  end)

  it("works on any ATS version: it reads no private layout", function()
    double.set_version(10, 1, 0)
    assert.equal("10.1.0", info.version())
  end)

  for _, name in ipairs { "version", "version_number", "install_dir", "config_dir",
                          "runtime_dir", "plugin_dir" } do
    it(name .. "() refuses arguments with an error naming it", function()
      assert.matches("^ts_ffi%.info%." .. name .. ": takes no arguments %(got 1%)",
        double.error_of(info[name], 1))
      local ok, err = pcall(info[name], nil, nil)
      assert.is_false(ok)
      assert.matches("^ts_ffi%.info%." .. name .. ": takes no arguments %(got 2%)", err)
    end)
  end
end)
