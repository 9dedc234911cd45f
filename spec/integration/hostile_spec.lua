-- The hostile-input matrix (spec/support/hostile.lua) inside the real traffic_server: every
-- public function of every module with every hostile argument list, in every context a
-- remap or global script has (scripts/hostile.lua, scripts/hostile_global.lua,
-- scripts/transform_only.lua). traffic_server must survive and keep answering; every
-- context must report 0 failures.
local ats = require "support.ats"

local S = ats.root .. "/spec/integration/scripts/"

-- Contexts that must have reported, at least once each.
local EXPECTED = {
  "remap:load", "remap:__init__", "remap:do_remap", "remap:coroutine",
  "remap:hook:POST_REMAP", "remap:hook:OS_DNS", "remap:hook:CACHE_LOOKUP_COMPLETE",
  "remap:hook:SEND_REQUEST_HDR", "remap:hook:READ_RESPONSE_HDR", "remap:hook:SEND_RESPONSE_HDR",
  "remap:hook:TXN_CLOSE", "remap:response_transform", "remap:request_transform",
  "remap:ts_ffi_transform",
  "remap:intercept", "remap:server_intercept", "remap:fetch", "remap:schedule",
  "remap:schedule_after_close", "remap:kept_owner", "remap:kept_coroutine",
  "global:load", "global:__init__", "global:do_global_txn_start", "global:do_global_read_request",
  "global:do_global_pre_remap", "global:do_global_post_remap", "global:do_global_os_dns",
  "global:do_global_cache_lookup_complete", "global:do_global_send_request",
  "global:do_global_read_response", "global:do_global_send_response", "global:do_global_txn_close",
  "global:hook:PRE_REMAP", "global:hook:POST_REMAP", "global:hook:SEND_REQUEST_HDR",
  "global:hook:READ_RESPONSE_HDR", "global:hook:SEND_RESPONSE_HDR", "global:hook:TXN_CLOSE",
  "global:response_transform",
  "transform_only:load", "transform_only:transform",
}

describe("hostile input inside traffic_server", function()
  local sb

  setup(function()
    sb = ats.start {
      remap = {
        ["hostile.test"] = S .. "hostile.lua",
        ["transform-only.test"] = S .. "transform_only.lua",
        ["plain.test"] = {},
      },
      global = S .. "hostile_global.lua",
    }
  end)

  teardown(function()
    if sb then sb:stop() end
  end)

  local function log()
    local f = io.open(sb.dir .. "/hostile.log")
    local s = f and f:read("*a") or ""
    if f then f:close() end
    return s
  end

  local function wait_for(context, seconds)
    for _ = 1, seconds * 20 do
      if log():find("context=" .. context .. " ", 1, true) then return true end
      os.execute("sleep 0.05")
    end
    return false
  end

  it("runs in every context, with every answer right and every misuse named", function()
    local requests = 0
    local function get(path, curl)
      local res = sb:get("hostile.test", path, { curl = curl })
      requests = requests + 1
      assert(res.status == 200, path .. ": status " .. tostring(res.status) .. "\n" .. sb:diagnostics())
      return res
    end
    get("/hooks")
    get("/request_transform", "--data-binary hello")
    get("/request_transform", "--data-binary hello")
    assert.equal("intercept\n", get("/intercept").body)
    assert.equal("intercept\n", get("/server_intercept").body)
    assert.equal("200", get("/fetch").headers["x-fetch-status"])
    get("/schedule")
    for _ = 1, 6 do get("/kept") end -- each VM: the first makes it, later ones resume it
    assert.equal(200, sb:get("plain.test", "/hostile/global").status)
    -- the dangling context under concurrency: 30 transform-only transactions at once
    local paths = {}
    for i = 1, 30 do paths[i] = "/slow-chunked/3000/1000/20?hostile=1" end
    for _, res in ipairs(sb:get_parallel("transform-only.test", paths)) do
      assert.equal(200, res.status)
      assert.falsy(res.body:find("[ffi id=", 1, true), "a transform got an answer")
    end
    requests = requests + 31
    assert.is_true(wait_for("remap:schedule_after_close", 5), "no late ts.schedule callback")

    local text = log()
    local seen, calls, lines = {}, 0, 0
    for line in text:gmatch("[^\n]+") do
      lines = lines + 1
      local context, n, failures = line:match("^context=(%S+) .* calls=(%d+) failures=(%d+)")
      assert.truthy(context, line)
      assert.equal("0", failures, line)
      seen[context] = (seen[context] or 0) + 1
      calls = calls + tonumber(n)
    end
    local missing = {}
    for _, c in ipairs(EXPECTED) do
      if not seen[c] then missing[#missing + 1] = c end
    end
    assert.same({}, missing)
    assert.is_true(seen["transform_only:transform"] >= 30)
    print(("\n# hostile (traffic_server): %d contexts, %d context runs, %d calls, %d requests, 0 failures")
      :format(#EXPECTED, lines, calls, requests))
  end)

  it("leaves traffic_server running and answering, with no crash logged", function()
    assert.is_true(sb:alive())
    assert.equal(200, sb:get("plain.test", "/after").status)
    assert.equal(200, sb:get("hostile.test", "/after").status)
    local diags = sb:log("diags.log")
    assert.falsy(diags:find("FATAL", 1, true))
    assert.falsy(diags:find("Segmentation", 1, true))
    assert.falsy(diags:find("lua_resume failed", 1, true))
  end)
end)
