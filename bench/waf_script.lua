-- The traffic_server script of `make bench`'s WAF part (bench/waf.lua): Debian's OWASP CRS
-- with ts_ffi's base configuration, exactly the files bench/waf_cost.c loads. Remap pparam
-- "off": the same script and engine, but protect() is not called (the requests that skip
-- the WAF, and the baseline of the cost).
local waf = require "ts_ffi.waf"

local engine = assert(waf.new {
  files = { waf.base_conf, "/etc/modsecurity/crs/crs-setup.conf",
            "/usr/share/modsecurity-crs/rules/*.conf" },
})

-- The bench checks that C loaded as many rules.
local f = io.open(os.getenv("TS_FFI_SANDBOX") .. "/waf_rules.log", "a")
if f then
  f:write(engine.rules, "\n")
  f:close()
end

local protect = true

function __init__(args)
  for _, a in ipairs(args) do
    if a == "off" then protect = false end
  end
  return 0
end

function do_remap()
  if protect then
    local ok, err = engine:protect()
    if not ok then ts.error("bench: protect failed: " .. tostring(err)) end
  end
  return 0
end
