-- examples/nexthop.lua and examples/outgoing_addr.lua in a real traffic_server, installed the
-- way users install them (the scripts find the tree through ts.add_package_path).
local ats = require "support.ats"

describe("examples: X-Nexthop and the outgoing address", function()
  local sb

  setup(function()
    sb = ats.start {
      remap = {
        ["nexthop.test"] = ats.root .. "/examples/nexthop.lua",
        ["outgoing.test"] = ats.root .. "/examples/outgoing_addr.lua",
      },
      lua_path = false,
    }
  end)

  teardown(function()
    if sb then sb:stop() end
  end)

  it("nexthop.lua: X-Nexthop names the origin that served the request", function()
    local res = sb:get("nexthop.test", "/")
    assert.equal(200, res.status)
    assert.equal("127.0.0.1:" .. sb.origin_port, res.headers["x-nexthop"])
  end)

  it("outgoing_addr.lua: /premium/ leaves from 127.0.0.2, the rest from the default", function()
    local r = sb:get_sequence("outgoing.test", { "/premium/a", "/plain", "/premium/b" })
    assert.matches("^127%.0%.0%.2:", r[1].headers["x-origin-peer"])
    assert.matches("^127%.0%.0%.1:", r[2].headers["x-origin-peer"]) -- same client connection
    assert.matches("^127%.0%.0%.2:", r[3].headers["x-origin-peer"])
  end)
end)
