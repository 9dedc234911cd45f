-- Global script (plugin.config) for spec/integration/hostile_spec.lua: the hostile matrix in
-- every do_global_* function and in ts.hook hooks registered from one, on requests whose
-- path starts with /hostile (other requests pass untouched).
local root = debug.getinfo(1, "S").source:match("^@(.*)/spec/integration/scripts/")
package.path = root .. "/spec/?.lua;" .. package.path
local hostile = require "support.hostile"

hostile.report("global:load", "none", { oracle = hostile.ts_lua_oracle(false) })

function __init__()
  hostile.report("global:__init__", "none", { oracle = hostile.ts_lua_oracle(false) })
end

local function wanted()
  return (ts.client_request.get_uri() or ""):sub(1, 8) == "/hostile"
end

local function run(context, in_ts_lua_transform)
  hostile.report(context, "txn", { oracle = hostile.ts_lua_oracle(true),
                                   ts_lua_transform = in_ts_lua_transform })
end

for _, name in ipairs { "txn_start", "read_request", "pre_remap", "post_remap", "os_dns",
                        "cache_lookup_complete", "read_cache", "send_request", "read_response",
                        "send_response", "txn_close" } do
  _G["do_global_" .. name] = function()
    -- at txn_start the request is not parsed yet: always run there
    if name == "txn_start" or wanted() then run("global:do_global_" .. name) end
    if name == "read_request" and wanted() then
      for _, h in ipairs { "PRE_REMAP", "POST_REMAP", "SEND_REQUEST_HDR", "READ_RESPONSE_HDR",
                           "SEND_RESPONSE_HDR", "TXN_CLOSE" } do
        ts.hook(_G["TS_LUA_HOOK_" .. h], function() run("global:hook:" .. h) end)
      end
      local done = false
      ts.hook(TS_LUA_RESPONSE_TRANSFORM, function(data, eos)
        if not done then done = true; run("global:response_transform", true) end
        return data, eos
      end)
    end
    return 0
  end
end
