-- X-Country: the client's country (ISO 3166 code) from a GeoIP database, added to the request
-- sent to the origin and to the response.
--
--   map http://example.com/ http://origin/ @plugin=tslua.so @pparam=/path/to/x_country.lua
--       [@pparam=trust-x-forwarded-for]
--
-- The databases are opened once, at script load: ts_ffi loads each file once per process and
-- every Lua VM (ATS runs several) shares it. By default Debian's legacy country databases
-- (package geoip-database); set TS_FFI_GEOIP_DB in traffic_server's environment to use a
-- MaxMind DB file (.mmdb) instead, e.g. GeoLite2-Country.mmdb.
--
-- The address looked up is the client's. With trust-x-forwarded-for it is the last address
-- of the X-Forwarded-For header when there is one: only for an ATS behind a proxy or load
-- balancer you trust to set that header (anyone else can write any address into it). `make
-- demo` uses it to show real answers, since on loopback every client is 127.0.0.1.
local tree = os.getenv("TS_FFI_TREE") or "/usr/local"
ts.add_package_path(tree .. "/share/lua/5.1/?.lua")
ts.add_package_cpath(tree .. "/lib/lua/5.1/?.so")

local geoip = require "ts_ffi.geoip"

local db4, db6
local custom = os.getenv("TS_FFI_GEOIP_DB")
if custom then
  db4 = geoip.open(custom)
  db6 = db4
else
  db4 = geoip.open("/usr/share/GeoIP/GeoIP.dat")
  db6 = geoip.open("/usr/share/GeoIP/GeoIPv6.dat")
end
if not db4 or not db6 then
  -- a missing database must not stop the proxy: log it and add no header
  ts.error("x_country.lua: cannot open the GeoIP database: "
    .. tostring(select(2, geoip.open(custom or "/usr/share/GeoIP/GeoIP.dat"))))
end

local trust_xff = false
function __init__(argtb)
  for _, arg in pairs(argtb) do
    if arg == "trust-x-forwarded-for" then trust_xff = true end
  end
  return 0
end

local function client_address()
  if trust_xff then
    local xff = ts.client_request.header["X-Forwarded-For"]
    local last = xff and xff:match("([^,%s]+)%s*$")
    if last then return last end
  end
  return (ts.client_request.client_addr.get_addr())
end

local function add_response_header()
  ts.client_response.header["X-Country"] = ts.ctx.country
end

function do_remap()
  local ip = client_address()
  local db = ip and (ip:find(":", 1, true) and db6 or db4)
  if db then
    -- a malformed X-Forwarded-For raises (a bad address): treat it as unknown
    local ok, country = pcall(db.country, db, ip)
    if ok and country then
      ts.client_request.header["X-Country"] = country
      ts.ctx.country = country
      ts.hook(TS_LUA_HOOK_SEND_RESPONSE_HDR, add_response_header)
    end
  end
  return 0
end
