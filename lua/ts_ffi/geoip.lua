-- ts_ffi.geoip: country lookups in MaxMind DB files (.mmdb) and legacy GeoIP country
-- databases (GeoIP.dat, GeoIPv6.dat), told apart by content. A database is loaded once per
-- process and file and shared by every Lua VM and thread; `open` is valid anywhere (script
-- load time is the normal place), lookups too.

local ffi = require "ffi"
local base = require "ts_ffi.base"
local native, C, throw, codes = base.native, base.C, base.throw, base.codes

local type, select, setmetatable, tostring = type, select, setmetatable, tostring
local ffi_string, ffi_cast = ffi.string, ffi.cast

ffi.cdef [[
typedef struct ts_ffi_geoip_handle ts_ffi_geoip_handle;
int ts_ffi_geoip_country(const ts_ffi_geoip_handle *h, const char *ip, size_t ip_len,
                         char *out, size_t cap, size_t *len);
]]

local handle_t = ffi.typeof("const ts_ffi_geoip_handle *")
local CAP = 64
local buf = ffi.new("char[?]", CAP)
local lenp = ffi.new("size_t[1]")
local country_c = C.ts_ffi_geoip_country
local OK, DECLINED, BAD_ARG, GONE = codes.ok, codes.declined, codes.bad_arg, codes.gone

local native_open, native_lookup = native.geoip_open, native.geoip_lookup
local native_close, native_info = native.geoip_close, native.geoip_info

local DB = {}
local mt = { __index = DB, __metatable = "ts_ffi.geoip db" }

-- Each db object's native parts, out of the script's reach: the userdata `ud` owns the handle
-- that the pointer `h` (for the flat calls) points to; both live as long as the db object.
local parts = setmetatable({}, { __mode = "k" })

local function quote(ip)
  local s = tostring(ip)
  if #s > 60 then s = s:sub(1, 60) .. "..." end
  return "'" .. s .. "'"
end

local function not_a_db(fname, level)
  throw(fname, "call it as db:" .. fname:match("[^.]+$") .. "(...) on a database from "
    .. "ts_ffi.geoip.open", level + 1)
end

-- The db's native parts; raises unless `self` is a db and `ip` a string (programming errors).
local function check(fname, self, ip, nargs)
  local p = parts[self]
  if not p then
    not_a_db(fname, 2)
  end
  if nargs ~= 1 then
    throw(fname, "takes one argument, the address (got " .. nargs .. ")", 2)
  end
  if type(ip) ~= "string" then
    throw(fname, "the address must be a string (got " .. type(ip) .. ")", 2)
  end
  return p
end

local function closed(fname)
  throw(fname, "database is closed", 2)
end

local _M = {}

function _M.open(...)
  local path = ...
  if select("#", ...) ~= 1 then
    throw("ts_ffi.geoip.open", "takes one argument, the path (got " .. select("#", ...) .. ")", 1)
  end
  if type(path) ~= "string" then
    throw("ts_ffi.geoip.open", "the path must be a string (got " .. type(path) .. ")", 1)
  end
  local ud, addr = native_open(path)
  if not ud then
    return nil, addr
  end
  local db = setmetatable({}, mt)
  parts[db] = { ud = ud, h = ffi_cast(handle_t, addr) }
  return db
end

function DB.country(self, ...)
  local ip = ...
  local p = check("ts_ffi.geoip.country", self, ip, select("#", ...))
  local rc = country_c(p.h, ip, #ip, buf, CAP, lenp)
  if rc == OK then
    return ffi_string(buf, lenp[0])
  elseif rc == DECLINED then
    return nil
  elseif rc == BAD_ARG then
    throw("ts_ffi.geoip.country", "bad address " .. quote(ip), 1)
  elseif rc == GONE then
    closed("ts_ffi.geoip.country")
  end
  throw("ts_ffi.geoip.country", "internal error (" .. tostring(rc) .. ")", 1)
end

function DB.lookup(self, ...)
  local ip = ...
  local p = check("ts_ffi.geoip.lookup", self, ip, select("#", ...))
  local rec, err = native_lookup(p.ud, ip)
  if rec ~= nil or err == nil then
    return rec
  elseif err == "bad_address" then
    throw("ts_ffi.geoip.lookup", "bad address " .. quote(ip), 1)
  elseif err == "closed" then
    closed("ts_ffi.geoip.lookup")
  end
  throw("ts_ffi.geoip.lookup", "internal error (" .. tostring(err) .. ")", 1)
end

function DB.info(self, ...)
  local p = parts[self]
  if not p or select("#", ...) ~= 0 then
    throw("ts_ffi.geoip.info", "call it as db:info() (no arguments)", 1)
  end
  local t, err = native_info(p.ud)
  if not t then
    if err == "closed" then closed("ts_ffi.geoip.info") end
    throw("ts_ffi.geoip.info", "internal error (" .. tostring(err) .. ")", 1)
  end
  return t
end

function DB.close(self, ...)
  local p = parts[self]
  if not p or select("#", ...) ~= 0 then
    throw("ts_ffi.geoip.close", "call it as db:close() (no arguments)", 1)
  end
  return native_close(p.ud)
end

mt.__tostring = function(self)
  local t = native_info(parts[self].ud)
  return "ts_ffi.geoip db: " .. (t and (t.path .. " (" .. t.kind .. ")") or "closed")
end

-- The databases loaded in this process: { { path, kind, size, load_id, opens }, ... }.
function _M.loaded(...)
  base.no_args("ts_ffi.geoip.loaded", ...)
  return native.geoip_loaded()
end

return _M
