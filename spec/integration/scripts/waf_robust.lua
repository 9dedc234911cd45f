-- ts_ffi.waf robustness (waf_robust_spec.lua): Debian's OWASP CRS plus test rules. As a remap
-- script or a global one (`--enable-reload`). Rules of its own:
--   X-Slow: <name>-<ms>  on a request makes phase 1 (X-Slow-Phase absent), 2 ("body") or
--                        3 ("response") take <ms> inside libmodsecurity (waf_robust_slow.lua);
--   the logging phase (5) logs "logging phase for <tag> status <final status>";
--   ARGS:drop=me         a `drop` rule; ARGS:gen=<this script's generation>  denied with 409.
-- The generation is the number in $TS_FFI_SANDBOX/gen when the script was loaded (0 if none):
-- a reload after changing it makes a new engine. Every response carries X-Gen (this VM's
-- generation) and X-Live (waf.live_engines()); /__live is answered uninspected.
local waf = require "ts_ffi.waf"

local dir = os.getenv("TS_FFI_SANDBOX")
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$")
local f = io.open(dir .. "/gen")
local gen = f and tonumber(f:read("*l")) or 0
if f then f:close() end

local slow = here .. "/waf_robust_slow.lua"
local engine = assert(waf.new {
  files = { waf.base_conf, "/etc/modsecurity/crs/crs-setup.conf",
            "/usr/share/modsecurity-crs/rules/*.conf" },
  rules = ([[
SecRule REQUEST_HEADERS:X-Slow "@rx ." "id:4299001,phase:1,pass,nolog,exec:SLOW,chain"
  SecRule &REQUEST_HEADERS:X-Slow-Phase "@eq 0" "t:none"
SecRule REQUEST_HEADERS:X-Slow-Phase "@streq body" "id:4299002,phase:2,pass,nolog,exec:SLOW"
SecRule REQUEST_HEADERS:X-Slow-Phase "@streq response" "id:4299003,phase:3,pass,nolog,exec:SLOW"
SecRule REQUEST_HEADERS:X-Slow "@rx ^(\S+)$" \
  "id:4299005,phase:5,pass,log,capture,msg:'logging phase for %{TX.1} status %{RESPONSE_STATUS}'"
SecRule ARGS:drop "@streq me" "id:4299010,phase:1,drop"
SecRule ARGS:gen "@streq GEN" "id:4299011,phase:1,deny,status:409"
]]):gsub("SLOW", slow):gsub("GEN", tostring(gen)),
})

f = io.open(dir .. "/loads.log", "a")
f:write(gen, " ", engine.id, "\n")
f:close()

function __reload__()
  -- Drop this VM's reference now (not whenever the old globals are collected).
  engine = nil
  collectgarbage()
  collectgarbage()
end

local function mark()
  ts.client_response.header["X-Gen"] = gen
  ts.client_response.header["X-Live"] = waf.live_engines()
  return 0
end

local function protect()
  ts.hook(TS_LUA_HOOK_SEND_RESPONSE_HDR, mark)
  if ts.client_request.get_uri() == "/__live" then return 0 end
  local ok, err = engine:protect()
  if not ok then ts.error("waf protect failed: " .. tostring(err)) end
  return 0
end

do_remap = protect
do_global_read_request = protect
