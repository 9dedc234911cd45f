-- Remap script for spec/integration/geoip_spec.lua: databases opened at load time in every Lua
-- VM (shared: loaded once per process), lookups of the address in the X-Lookup request header,
-- answers returned as response headers.
local geoip = require "ts_ffi.geoip"

local fixtures = assert(os.getenv("TS_FFI_GEOIP_FIXTURES"))
local mm = assert(geoip.open(fixtures .. "/country.mmdb"))
local legacy4 = assert(geoip.open("/usr/share/GeoIP/GeoIP.dat"))
local legacy6 = assert(geoip.open("/usr/share/GeoIP/GeoIPv6.dat"))

-- Opening what is no database answers nil, err at load time (a FIFO must not block startup).
local open_errors = {}
for _, p in ipairs { fixtures .. "/fifo", fixtures, "/dev/zero", fixtures .. "/corrupt.mmdb" } do
  local db, err = geoip.open(p)
  open_errors[#open_errors + 1] = db and "opened?" or err
end

local vm = tostring(geoip):match("0x%x+") -- this VM's module table: differs per Lua VM

local function opens(path)
  for _, t in ipairs(geoip.loaded()) do
    if t.path == path then return t.opens end
  end
  return 0
end

local function answer()
  local ip = ts.client_request.header["X-Lookup"] or "127.0.0.1"
  local h = ts.client_response.header
  h["X-Mmdb"] = mm:country(ip) or "nil"
  local legacy = ip:find(":", 1, true) and legacy6 or legacy4
  h["X-Legacy"] = legacy:country(ip) or "nil"
  local rec = mm:lookup(ip)
  h["X-Mmdb-Name"] = rec and rec.country and rec.country.names and rec.country.names.en or "nil"
  local lrec = legacy:lookup(ip)
  h["X-Legacy-Name"] = lrec and lrec.country_name or "nil"
  h["X-Load-Ids"] = mm:info().load_id .. "," .. legacy4:info().load_id .. "," .. legacy6:info().load_id
  h["X-Opens"] = opens(fixtures .. "/country.mmdb")
  h["X-Vm"] = vm
  h["X-Open-Errors"] = table.concat(open_errors, " | ")
  h["X-Bad-Address"] = select(2, pcall(mm.country, mm, "bogus"))
end

function do_remap()
  ts.hook(TS_LUA_HOOK_SEND_RESPONSE_HDR, answer)
  return 0
end
