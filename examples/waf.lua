-- A web application firewall: ModSecurity v3 (libmodsecurity) with the OWASP Core Rule Set
-- from Debian on every request of this remap rule, plus the ATS Lua plugin talk's own rule.
-- libmodsecurity runs on ATS's task threads; response bodies are held back until inspected.
-- A remap script: map http://example.test/ http://origin/ @plugin=tslua.so @pparam=waf.lua
local tree = os.getenv("TS_FFI_TREE") or "/usr/local"
ts.add_package_path(tree .. "/share/lua/5.1/?.lua")
ts.add_package_cpath(tree .. "/lib/lua/5.1/?.so")

local waf = require "ts_ffi.waf"

-- Loaded once per process, shared by every Lua VM (nil, err names the file and line).
local engine = assert(waf.new {
  files = { waf.base_conf, "/etc/modsecurity/crs/crs-setup.conf",
            "/usr/share/modsecurity-crs/rules/*.conf" },
  rules = [[SecRule ARGS:testparam "@contains test" "id:1234,phase:2,deny,status:403"]],
})

function do_remap()
  local ok, err = engine:protect()
  if not ok then
    ts.error("waf: " .. err)
  end
  return 0
end
