-- A Rust panic never crosses the FFI boundary: with the panic-test build of ts_ffi.so
-- (`make panic-build`: cargo feature `panic-test`, never shipped), a panic in a flat FFI
-- function, in a native function and in a bare mlua callback each comes back to Lua as an
-- error, and the process goes on working.
local SO = "build/panic/ts_ffi.so"

describe("a Rust panic", function()
  local out

  setup(function()
    assert(io.open(SO), SO .. " missing (make panic-build)"):close()
    local p = io.popen("LUA_PATH='build/tree/share/lua/5.1/?.lua;spec/?.lua;;' "
      .. "LUA_CPATH='build/panic/?.so;;' luajit spec/support/panic_probe.lua 2>/dev/null; echo exit=$?")
    out = p:read("*a")
    p:close()
  end)

  it("in a flat FFI function is a Lua error naming the function", function()
    assert.matches("\nexit=0\n$", "\n" .. out)
    assert.matches("flat\tfalse\tts_ffi%.test%.flat: internal error", out)
  end)

  it("in a native function is a Lua error naming the function", function()
    assert.matches("native\tfalse\tts_ffi%.test%.native: internal error", out)
  end)

  it("in a bare mlua callback is a Lua error (mlua's catch)", function()
    assert.matches("callback\tfalse\tindex out of bounds", out)
  end)

  it("leaves the module working", function()
    assert.matches("after\t%d+", out)
  end)
end)
