-- ts_ffi.geoip inside a real traffic_server: known answers from a MaxMind DB fixture written
-- here and from Debian's legacy GeoIP databases; every Lua VM shares one loaded copy.
local ats = require "support.ats"
local mmdb = require "support.mmdb"

local S = ats.root .. "/spec/integration/scripts/"

describe("ts_ffi.geoip inside traffic_server", function()
  local sb, dir

  setup(function()
    dir = io.popen("mktemp -d /tmp/ts_ffi_geoip_it.XXXXXX"):read("*l")
    mmdb.write(dir .. "/country.mmdb", { networks = mmdb.COUNTRY_NETWORKS })
    assert(os.execute("mkfifo " .. dir .. "/fifo") == 0)
    local f = assert(io.open(dir .. "/corrupt.mmdb", "wb"))
    f:write(mmdb.build({ networks = mmdb.COUNTRY_NETWORKS }):sub(1, 300))
    f:close()
    sb = ats.start {
      remap = { ["geoip.test"] = S .. "geoip.lua" },
      env = { TS_FFI_GEOIP_FIXTURES = dir },
      max_states = 4,
    }
  end)

  teardown(function()
    if sb then sb:stop() end
    if dir then os.execute("rm -rf " .. dir) end
  end)

  local function get(ip)
    local res = sb:get("geoip.test", "/", { curl = ip and ("-H 'X-Lookup: " .. ip .. "'") or "" })
    assert(res.status == 200, "status " .. tostring(res.status) .. "\n" .. sb:diagnostics())
    return res.headers
  end

  it("answers the known countries from the MaxMind DB fixture", function()
    local known = { ["81.2.69.142"] = "GB", ["216.160.83.57"] = "US", ["89.160.20.113"] = "SE",
      ["2001:218::1"] = "JP", ["214.1.1.1"] = "nil", ["10.0.0.1"] = "nil", ["127.0.0.1"] = "nil" }
    for ip, cc in pairs(known) do
      assert.equal(cc, get(ip)["x-mmdb"], ip)
    end
    assert.equal("United Kingdom", get("81.2.69.142")["x-mmdb-name"])
  end)

  it("answers from Debian's legacy GeoIP.dat and GeoIPv6.dat", function()
    local h = get("8.8.8.8")
    assert.equal("US", h["x-legacy"])
    assert.equal("United States", h["x-legacy-name"])
    assert.equal("US", get("2001:4860:4860::8888")["x-legacy"])
    assert.equal("nil", get("127.0.0.1")["x-legacy"])
  end)

  it("loads each database once, shared by every Lua VM", function()
    local ids, vms = {}, {}
    for i = 1, 12 do
      local h = get("81.2.69." .. i)
      ids[h["x-load-ids"]] = true
      vms[h["x-vm"]] = true
      -- every VM (max_states = 4) opened the file at load time: 4 opens, one copy
      assert.equal("4", h["x-opens"])
    end
    local n = 0
    for _ in pairs(ids) do n = n + 1 end
    assert.equal(1, n)
    local diags = sb:log("diags.log")
    for _, p in ipairs { dir .. "/country.mmdb", "/usr/share/GeoIP/GeoIP.dat", "/usr/share/GeoIP/GeoIPv6.dat" } do
      local loads = 0
      for _ in diags:gmatch("ts_ffi%.geoip: loaded " .. p:gsub("%p", "%%%0") .. " ") do loads = loads + 1 end
      assert.equal(1, loads, p .. "\n" .. diags)
    end
  end)

  it("answers nil, err for a FIFO, a directory, /dev/zero and a corrupt file at load time", function()
    local errs = get("8.8.8.8")["x-open-errors"]
    assert.matches("is a FIFO, not a database file | .- is a directory, not a database file | "
      .. "/dev/zero is a character device, not a database file | .-corrupt%.mmdb: ", errs)
  end)

  it("raises errors naming the function for bad addresses", function()
    assert.matches("^ts_ffi%.geoip%.country: bad address 'bogus'", get("8.8.8.8")["x-bad-address"])
  end)

  it("keeps traffic_server running", function()
    assert.is_true(sb:alive())
    assert.falsy(sb:log("diags.log"):find("FATAL", 1, true))
  end)
end)
