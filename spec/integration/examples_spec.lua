-- The examples/ scripts inside a real traffic_server, as `make demo` runs them (the scripts
-- find ts_ffi through TS_FFI_TREE themselves).
local ats = require "support.ats"
local mmdb = require "support.mmdb"

local E = ats.root .. "/examples/"

local function get(sb, host, header)
  local res = sb:get(host, "/", { curl = header and ("-H '" .. header .. "'") or "" })
  assert(res.status == 200, "status " .. tostring(res.status) .. "\n" .. sb:diagnostics())
  return res.headers
end

describe("examples inside traffic_server", function()
  local sb

  setup(function()
    sb = ats.start {
      remap = {
        ["demo.test"] = E .. "demo.lua",
        ["rtt.test"] = E .. "x_tcp_rtt.lua",
        ["country.test"] = E .. "x_country.lua",
        ["country-xff.test"] = { E .. "x_country.lua", "trust-x-forwarded-for" },
        ["waf.test"] = E .. "waf.lua",
      },
      lua_path = false,
      start_timeout = 30,
    }
  end)

  teardown(function()
    if sb then sb:stop() end
  end)

  it("demo.lua adds what ts_ffi knows", function()
    local h = get(sb, "demo.test")
    assert.equal("9.2.9", h["x-ts-ffi-version"]:match("^%d+%.%d+%.%d+"))
    assert.truthy(tonumber(h["x-ts-ffi-txn-id"]))
  end)

  it("x_tcp_rtt.lua adds the client connection's rtt in µs", function()
    local h = get(sb, "rtt.test")
    assert.is_true(tonumber(h["x-tcp-rtt"]) > 0, h["x-tcp-rtt"])
    assert.truthy(tonumber(h["x-tcp-rttvar"]))
  end)

  it("x_country.lua adds the country of the last X-Forwarded-For address when told to trust it", function()
    assert.equal("US", get(sb, "country-xff.test", "X-Forwarded-For: 8.8.8.8")["x-country"])
    assert.equal("US", get(sb, "country-xff.test", "X-Forwarded-For: 2001:4860:4860::8888")["x-country"])
    assert.equal("US", get(sb, "country-xff.test", "X-Forwarded-For: 81.2.69.142, 8.8.8.8")["x-country"])
    -- a malformed address is unknown, not an error page
    assert.is_nil(get(sb, "country-xff.test", "X-Forwarded-For: bogus")["x-country"])
    -- the client itself is 127.0.0.1: no country
    assert.is_nil(get(sb, "country-xff.test")["x-country"])
  end)

  it("x_country.lua ignores X-Forwarded-For unless told to trust it", function()
    assert.is_nil(get(sb, "country.test", "X-Forwarded-For: 8.8.8.8")["x-country"])
  end)

  it("waf.lua passes clean traffic and denies attacks, the talk's rule and leaking pages", function()
    local function status(path) return sb:get("waf.test", path).status end
    assert.equal(200, status("/search?q=hello+world"))
    assert.equal(403, status("/search?q=1%27%20OR%20%271%27%3D%271"))
    assert.equal(403, status("/?testparam=test"))
    assert.equal(403, status("/typed/text/html/sql-error"))
    local res = sb:get("waf.test", "/typed/text/html/clean-app")
    assert.equal(200, res.status)
    assert.truthy(res.body:find("Tea &amp; biscuits", 1, true))
  end)
end)

describe("x_country.lua with a MaxMind DB file (TS_FFI_GEOIP_DB)", function()
  local sb, dir

  setup(function()
    dir = io.popen("mktemp -d /tmp/ts_ffi_examples.XXXXXX"):read("*l")
    mmdb.write(dir .. "/country.mmdb", { networks = mmdb.COUNTRY_NETWORKS })
    sb = ats.start {
      remap = { ["country-xff.test"] = { E .. "x_country.lua", "trust-x-forwarded-for" } },
      lua_path = false,
      env = { TS_FFI_GEOIP_DB = dir .. "/country.mmdb" },
    }
  end)

  teardown(function()
    if sb then sb:stop() end
    if dir then os.execute("rm -rf " .. dir) end
  end)

  it("answers from it, IPv4 and IPv6", function()
    assert.equal("GB", get(sb, "country-xff.test", "X-Forwarded-For: 81.2.69.142")["x-country"])
    assert.equal("JP", get(sb, "country-xff.test", "X-Forwarded-For: 2001:218::1")["x-country"])
    assert.is_nil(get(sb, "country-xff.test", "X-Forwarded-For: 8.8.8.8")["x-country"])
  end)
end)
