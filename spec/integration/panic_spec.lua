-- A Rust panic inside traffic_server: with the panic-test build of ts_ffi.so (cargo feature
-- `panic-test`, `make panic-build`, never shipped) in a copy of the tree, each kind of entry
-- point panics on every request; each panic comes back to the script as a Lua error and
-- traffic_server keeps serving.
local ats = require "support.ats"

describe("a Rust panic inside traffic_server", function()
  local sb, tree

  setup(function()
    tree = ats.root .. "/build/panic-tree"
    assert(os.execute(("rm -rf %s && cp -r %s/build/tree %s && cp %s/build/panic/ts_ffi.so %s/lib/lua/5.1/ts_ffi.so")
      :format(tree, ats.root, tree, ats.root, tree)) == 0)
    sb = ats.start { tree = tree, remap = { ["panic.test"] = ats.root .. "/spec/integration/scripts/panic.lua" } }
  end)

  teardown(function()
    if sb then sb:stop() end
    os.execute("rm -rf " .. tree)
  end)

  it("comes back as a Lua error from each entry point, and traffic_server keeps serving", function()
    for i = 1, 3 do
      local res = sb:get("panic.test", "/" .. i)
      assert(res.status == 200, sb:diagnostics())
      local h = res.headers
      assert.matches("^ts_ffi%.test%.flat: internal error", h["x-flat"])
      assert.matches("^ts_ffi%.test%.native: internal error", h["x-native"])
      assert.matches("index out of bounds", h["x-callback"])
      local a, b = h["x-id"]:match("^(%d+)/(%d+)$")
      assert.equal(b, a)
    end
    assert.is_true(sb:alive())
    assert.falsy(sb:log("diags.log"):find("FATAL", 1, true))
  end)
end)
