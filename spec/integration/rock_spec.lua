-- The binary rock: `luarocks pack` of the installed tree, installed elsewhere with no network
-- and no Rust toolchain, works inside traffic_server.
local ats = require "support.ats"

local function run(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("*a")
  local ok = p:close()
  return out, ok
end

describe("binary rock", function()
  local dir, sb

  setup(function()
    dir = io.popen("mktemp -d /tmp/ts_ffi_rock.XXXXXX"):read("*l")
  end)

  teardown(function()
    if sb then sb:stop() end
    os.execute("rm -rf " .. dir)
  end)

  it("packs, installs offline without cargo, and loads in traffic_server", function()
    local out = run(("cd %s && luarocks --tree %s/build/tree pack ts_ffi scm-1"):format(dir, ats.root))
    local rock = out:match("Packed: (%S+%.rock)")
    assert.truthy(rock, out)
    -- a PATH without cargo or rustc, and no rock server
    out = run(("cd %s && env PATH=/usr/sbin:/usr/bin:/sbin:/bin luarocks install --tree %s/tree "
      .. "--deps-mode=none --only-server=/nonexistent %s"):format(dir, dir, rock))
    assert.matches("is now installed", out)
    local f = io.open(dir .. "/tree/lib/lua/5.1/ts_ffi.so")
    assert.truthy(f, "ts_ffi.so not installed")
    f:close()

    sb = ats.start {
      tree = dir .. "/tree",
      remap = { ["rock.test"] = ats.root .. "/examples/demo.lua" },
      lua_path = false,
    }
    local res = sb:get("rock.test", "/")
    assert.equal(200, res.status)
    assert.truthy(tonumber(res.headers["x-ts-ffi-txn-id"]), sb:diagnostics())
  end)
end)
