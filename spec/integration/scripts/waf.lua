-- ts_ffi.waf inside traffic_server (waf_spec.lua): the OWASP CRS from Debian, the talk's
-- custom rule and a few rules of the spec's own. Remap pparams: "open" (fail-open),
-- "limit=N" (request_body_limit), "nobody" (request_body = false), "rlimit=N"
-- (response_body_limit), "noresponse" (response = false).
local waf = require "ts_ffi.waf"

local engine = assert(waf.new {
  files = {
    waf.base_conf,
    "/etc/modsecurity/crs/crs-setup.conf",
    "/usr/share/modsecurity-crs/rules/*.conf",
  },
  rules = [[
SecRule ARGS:testparam "@contains test" "id:1234,deny,status:403"
SecRule ARGS:go "@streq away" "id:1235,phase:1,redirect:http://moved.test/elsewhere"
SecRule REQUEST_HEADERS:X-Waf-Test "@streq teapot" "id:1237,phase:1,deny,status:418"
SecRule ARGS:drop "@streq me" "id:1238,phase:1,drop"
SecRule ARGS:close "@streq now" "id:1240,phase:1,deny,status:444"
SecRule ARGS_POST:close "@streq now" "id:1241,phase:2,deny,status:444"
SecRule ARGS_POST:probe "@streq evil" "id:1239,phase:2,deny,status:403"
SecRule RESPONSE_HEADERS:X-Origin-Path "@contains leak-header" \
    "id:1236,phase:3,deny,status:403,msg:'response header leak'"
]],
})

-- One line per Lua VM that loaded this script: the engines must be one.
local f = io.open(os.getenv("TS_FFI_SANDBOX") .. "/waf_engines.log", "a")
f:write(engine.id, " ", engine.rules, "\n")
f:close()

local opts = {}

function __init__(args)
  for _, a in ipairs(args) do
    if a == "open" then opts.fail = "open" end
    local limit = a:match("^limit=(%d+)$")
    if limit then opts.request_body_limit = tonumber(limit) end
    if a == "nobody" then opts.request_body = false end
    local rlimit = a:match("^rlimit=(%d+)$")
    if rlimit then opts.response_body_limit = tonumber(rlimit) end
    if a == "noresponse" then opts.response = false end
  end
  return 0
end

local function protect()
  local ok, err = engine:protect(opts)
  if not ok then
    ts.error("waf protect failed: " .. tostring(err))
  end
  -- A second call on the same transaction is refused.
  local again, why = engine:protect(opts)
  assert(again == nil and why:find("already protected"))
end

function do_remap()
  protect()
  return 0
end

function do_global_read_request()
  protect()
  return 0
end
