-- ts_ffi.waf: ModSecurity v3 (libmodsecurity) with rule sets such as the OWASP CRS, run on
-- ATS task threads for the transactions a script protects.
--
--   local waf = require "ts_ffi.waf"
--   local engine = assert(waf.new{ files = { waf.base_conf, "/etc/modsecurity/crs/crs-setup.conf",
--                                            "/usr/share/modsecurity-crs/rules/*.conf" } })
--   function do_remap() engine:protect() return 0 end
--
-- waf.new(spec) → engine | nil, err          (at script load; shared process-wide)
-- engine:protect([opts]) → true | nil, err   (in do_remap or do_global_read_request)

local ffi = require "ffi"
local base = require "ts_ffi.base"
local native, C, get_ctx, throw, describe = base.native, base.C, base.get_ctx, base.throw, base.describe
local bor, getfenv, getmetatable, ipairs, next, rawget, rawset, select, setmetatable, type =
  bit.bor, getfenv, getmetatable, ipairs, next, rawget, rawset, select, setmetatable, type

ffi.cdef [[
int ts_ffi_waf_protect(const ts_ffi_ctx *rec, uint32_t engine_id, int flags, int64_t body_limit,
                      int64_t response_body_limit, const char *response_types);
]]

local _M = {}

-- The base configuration installed with the rock, next to this file.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
_M.base_conf = here .. "/modsecurity.conf"

local Engine = {}
Engine.__index = Engine

-- Where a protected transaction is marked, in its ts_lua environment.
local KEY = "__ts_ffi_waf"

function _M.new(spec, ...)
  local fname = "ts_ffi.waf.new"
  if select("#", ...) ~= 0 then
    throw(fname, "takes one argument, a table { files = {...}, rules = \"...\" }", 1)
  end
  if type(spec) ~= "table" then
    throw(fname, "bad argument (a table { files = {...}, rules = \"...\" } expected, got "
      .. describe(spec) .. ")", 1)
  end
  -- raw access only: the tables' metamethods are not ts_ffi's to run
  for k in next, spec do
    if k ~= "files" and k ~= "rules" then
      throw(fname, "unknown field " .. describe(k), 1)
    end
  end
  local files, rules = rawget(spec, "files") or {}, rawget(spec, "rules")
  if type(files) ~= "table" then
    throw(fname, "bad files (a list of file names expected, got " .. describe(files) .. ")", 1)
  end
  local list = {}
  for i, f in ipairs(files) do
    if type(f) ~= "string" or f == "" then
      throw(fname, "bad files[" .. i .. "] (a file name expected, got " .. describe(f) .. ")", 1)
    end
    list[i] = f
  end
  for k in next, files do
    if type(k) ~= "number" or not list[k] then
      throw(fname, "bad files (a list expected; it has the key " .. describe(k) .. ")", 1)
    end
  end
  if rules ~= nil and type(rules) ~= "string" then
    throw(fname, "bad rules (a string expected, got " .. describe(rules) .. ")", 1)
  end
  if #list == 0 and (rules == nil or rules == "") then
    throw(fname, "no rules: give files, rules or both", 1)
  end
  local ud, err = native.waf_new(list, rules)
  if not ud then
    return nil, err
  end
  return setmetatable({ _ud = ud, id = ud.id, rules = ud.rules }, Engine)
end

local FAIL_OPEN, NO_RESPONSE = native.waf_flag_fail_open, native.waf_flag_no_response
local NO_REQUEST_BODY = native.waf_flag_no_request_body
local floor = math.floor

-- Largest request body (decoded bytes) inspected by default; larger ones are answered 413.
_M.default_request_body_limit = 1048576
-- Bytes of a response body held back and inspected by default (the base conf's
-- SecResponseBodyLimit); the rest of a longer body passes uninspected (ProcessPartial).
_M.default_response_body_limit = 524288
-- Media types whose response bodies are inspected by default (the base conf's
-- SecResponseBodyMimeType).
_M.default_response_body_types = { "text/plain", "text/html", "text/xml", "application/json" }
local DEFAULT_TYPES = table.concat(_M.default_response_body_types, " ")

function Engine:protect(opts, ...)
  local fname = "ts_ffi.waf.protect"
  if getmetatable(self) ~= Engine then
    throw(fname, "call it as engine:protect([opts])", 1)
  end
  if select("#", ...) ~= 0 then
    throw(fname, "takes an optional options table", 1)
  end
  local flags, limit = 0, _M.default_request_body_limit
  local rlimit, rtypes = _M.default_response_body_limit, DEFAULT_TYPES
  if opts ~= nil then
    if type(opts) ~= "table" then
      throw(fname, "bad options (a table expected, got " .. describe(opts) .. ")", 1)
    end
    for k, v in next, opts do
      if k == "fail" then
        if v == "open" then
          flags = bor(flags, FAIL_OPEN)
        elseif v ~= "closed" then
          throw(fname, 'bad fail ("open" or "closed" expected, got ' .. describe(v) .. ")", 1)
        end
      elseif k == "response" then
        if type(v) ~= "boolean" then
          throw(fname, "bad response (a boolean expected, got " .. describe(v) .. ")", 1)
        end
        if not v then flags = bor(flags, NO_RESPONSE) end
      elseif k == "request_body" then
        if type(v) ~= "boolean" then
          throw(fname, "bad request_body (a boolean expected, got " .. describe(v) .. ")", 1)
        end
        if not v then flags = bor(flags, NO_REQUEST_BODY) end
      elseif k == "request_body_limit" then
        if type(v) ~= "number" or v < 0 or v ~= floor(v) or v > 2^53 then
          throw(fname, "bad request_body_limit (a byte count >= 0 expected, got " .. describe(v) .. ")", 1)
        end
        limit = v
      elseif k == "response_body_limit" then
        if type(v) ~= "number" or v < 0 or v ~= floor(v) or v > 2^31 then
          throw(fname, "bad response_body_limit (a byte count from 0 to 2^31 expected, got " .. describe(v) .. ")", 1)
        end
        rlimit = v
      elseif k == "response_body_types" then
        if type(v) ~= "table" then
          throw(fname, "bad response_body_types (a list of media types expected, got " .. describe(v) .. ")", 1)
        end
        local list = {}
        for i, t in ipairs(v) do
          if type(t) ~= "string" or not t:find("^[%w!#$&^_.+-]+/[%w!#$&^_.+-]+$") then
            throw(fname, "bad response_body_types[" .. i .. "] (a media type such as \"text/html\" expected, got "
              .. describe(t) .. ")", 1)
          end
          list[i] = t
        end
        for key in next, v do
          if type(key) ~= "number" or not list[key] then
            throw(fname, "bad response_body_types (a list expected; it has the key " .. describe(key) .. ")", 1)
          end
        end
        rtypes = table.concat(list, " ")
      else
        throw(fname, "unknown option " .. describe(k), 1)
      end
    end
  end
  local rec = get_ctx(fname)
  local env = getfenv(0)
  if rawget(env, KEY) then
    return nil, "this transaction is already protected"
  end
  local rc = C.ts_ffi_waf_protect(rec, self.id, flags, limit, rlimit, rtypes)
  if rc ~= 0 then
    if rc == base.codes.declined then
      return nil, "the request cannot be read (or libmodsecurity is not available)"
    end
    return base.fail(fname, rc, "a TS* function ts_ffi.waf needs")
  end
  rawset(env, KEY, true)
  return true
end

-- How many engines (rule sets) are alive in this process: held by a Lua VM or by a
-- transaction still being inspected.
function _M.live_engines(...)
  base.no_args("ts_ffi.waf.live_engines", ...)
  return native.waf_live_engines()
end

-- libmodsecurity's name and version, or nil, err when it cannot be opened.
function _M.version(...)
  base.no_args("ts_ffi.waf.version", ...)
  return native.waf_version()
end

return _M
