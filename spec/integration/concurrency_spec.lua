-- One ts_ffi.so serving every Lua VM and every ATS thread at once, then configuration
-- reloads under load: traffic_server under traffic_manager, 4 exec threads, max_states 8
-- (8 remap VMs and 8 global VMs), a remap and a global script (scripts/conc*.lua) that
-- require ts_ffi lazily, so its process-wide state is first used concurrently. Every answer
-- must be the transaction's own (equal to ts_lua's, equal across remap, hooks and global
-- hooks, unique per transaction).
local ats = require "support.ats"

local S = ats.root .. "/spec/integration/scripts/"
local MAX_STATES, THREADS = 8, 4

local function pairs_of(s)
  local t = {}
  for a, b in tostring(s):gmatch("(%-?%d+)/(%-?%d+)") do t[#t + 1] = { a, b } end
  return t
end

-- Checks every response; returns { ids = n, vms_r =, vms_g =, tids =, gens = {gen = n} }.
local function check_all(responses, seen_ids)
  local vms_r, vms_g, tids, gens = {}, {}, {}, {}
  local function count(t) local n = 0 for _ in pairs(t) do n = n + 1 end return n end
  for i, res in ipairs(responses) do
    assert(res.status == 200, "response " .. i .. ": status " .. tostring(res.status))
    local h = res.headers
    local id
    for _, name in ipairs { "x-r", "x-h", "x-g", "x-g-read" } do
      local p = pairs_of(h[name])
      assert(#p == 3, "response " .. i .. ": " .. name .. " = " .. tostring(h[name]))
      for _, ab in ipairs(p) do
        assert(ab[1] == ab[2], ("response %d: %s = %s (ts_ffi/ts_lua differ)"):format(i, name, h[name]))
      end
      id = id or p[1][1]
      assert(p[1][1] == id, ("response %d: %s names transaction %s, not %s"):format(i, name, p[1][1], id))
    end
    assert(h["x-misuse"] == "ok", "response " .. i .. ": misuse: " .. tostring(h["x-misuse"]))
    assert(not seen_ids[id], "transaction id " .. id .. " answered twice")
    seen_ids[id] = true
    vms_r[h["x-vm-r"]] = true
    vms_g[h["x-vm-g"]] = true
    tids[h["x-tid"]] = true
    gens[h["x-gen"]] = (gens[h["x-gen"]] or 0) + 1
  end
  return { n = #responses, vms_r = count(vms_r), vms_g = count(vms_g), tids = count(tids), gens = gens }
end

describe("concurrency and reloads", function()
  local sb, seen_ids, requests = nil, {}, 0

  setup(function()
    sb = ats.start {
      manager = true,
      threads = THREADS,
      max_states = MAX_STATES,
      remap = { ["conc.test"] = S .. "conc.lua" },
      global = "--enable-reload " .. S .. "conc_global.lua",
    }
  end)

  teardown(function()
    if sb then sb:stop() end
  end)

  local function load(n, max, host)
    local paths = {}
    for i = 1, n do paths[i] = "/c/" .. i end
    requests = requests + n
    return sb:get_parallel(host or "conc.test", paths, { max = max, timeout = 60 })
  end

  local function watched_settles()
    local w
    for _ = 1, 100 do
      w = sb:get("conc.test", "/watched").headers["x-watched"]
      if w == "0" then return true end
      os.execute("sleep 0.05")
    end
    return false, w
  end

  it("answers every transaction correctly from several VMs and threads at once", function()
    local r = check_all(load(400, 50), seen_ids)
    assert.is_true(r.vms_r >= 2, "remap VMs used: " .. r.vms_r)
    assert.is_true(r.vms_g >= 2, "global VMs used: " .. r.vms_g)
    assert.is_true(r.tids >= 2, "threads used: " .. r.tids)
    assert.falsy(io.open(sb.dir .. "/conc_errors.log"), "TXN_CLOSE saw a wrong answer")
    print(("\n# concurrency: 400 requests, 50 at once, %d remap VMs, %d global VMs, %d threads")
      :format(r.vms_r, r.vms_g, r.tids))
  end)

  it("releases every transaction context it watched", function()
    assert.is_true(watched_settles())
  end)

  it("keeps working through remap.config and global-script reloads under load", function()
    local server = sb:server_pid()
    -- in the background, while the load below runs: add a rule, reload, reload again
    local cfg = sb.dir .. "/etc/remap.config"
    os.execute(("(sleep 0.3; echo 'map http://new.test/ http://127.0.0.1:%d/ @plugin=tslua.so @pparam=%s' >> %s; "
      .. "traffic_ctl --run-root=%s/runroot.yaml config reload > %s/reload1.out 2>&1; sleep 0.7; "
      .. "traffic_ctl --run-root=%s/runroot.yaml config reload > %s/reload2.out 2>&1; "
      .. "touch %s/reloads.done) &"):format(sb.origin_port, S .. "conc.lua", cfg, sb.dir, sb.dir,
        sb.dir, sb.dir, sb.dir))
    -- rounds of load until both reloads are done and traffic_server has reloaded
    -- remap.config (it does so a few seconds after traffic_manager notices), then one more
    local function remap_loads()
      local n = 0
      for _ in sb:log("diags.log"):gmatch("remap%.config finished loading") do n = n + 1 end
      return n
    end
    local r, rounds, gens = nil, 0, {}
    local deadline = os.time() + 30
    repeat
      rounds = rounds + 1
      local done = io.open(sb.dir .. "/reloads.done") and remap_loads() >= 2
      r = check_all(load(300, 20), seen_ids)
      for g, n in pairs(r.gens) do gens[g] = (gens[g] or 0) + n end
    until done or os.time() > deadline
    r.gens = gens
    assert.is_true(remap_loads() >= 2, "remap.config was not reloaded")
    -- the load spanned the reload: answers from before and after it
    assert.truthy(r.gens["0"], "no answer before the reload")
    assert.truthy(r.gens["1"] or r.gens["2"], "no answer after the reload")
    -- __reload__ ran in every global VM, twice; ts_ffi there: an error naming the function
    local f = assert(io.open(sb.dir .. "/reload.log"), "__reload__ never ran")
    local lines = {}
    for line in f:lines() do
      lines[#lines + 1] = line
      assert.matches("txn_ok=false version=%d+%.%d+%.%d+ err=ts_ffi%.txn%.id: no transaction", line)
    end
    f:close()
    assert.equal(2 * MAX_STATES, #lines)
    -- the new rule works; nothing restarted; later answers still right
    check_all(sb:get_parallel("new.test", { "/n/1", "/n/2", "/n/3", "/n/4" }), seen_ids)
    check_all(load(200, 20), seen_ids)
    requests = requests + 4
    assert.equal(server, sb:server_pid())
    assert.falsy(io.open(sb.dir .. "/conc_errors.log"), "TXN_CLOSE saw a wrong answer")
    print(("\n# reloads: 2 x traffic_ctl config reload during %d requests (20 at once); "
      .. "__reload__ ran %d times; answers by generation: %s")
      :format(rounds * 300, #lines, (function() local t = {} for g, n in pairs(r.gens) do t[#t + 1] = g .. "=" .. n end
        table.sort(t) return table.concat(t, " ") end)()))
  end)

  it("leaves nothing watched, no crash, traffic_server still answering", function()
    assert.is_true(watched_settles())
    assert.is_true(sb:alive())
    local diags = sb:log("diags.log")
    assert.falsy(diags:find("FATAL", 1, true))
    assert.falsy(diags:find("Segmentation", 1, true))
    assert.falsy(diags:find("failed:", 1, true), diags:match("[^\n]*failed:[^\n]*"))
    print(("\n# concurrency + reloads: %d requests in all, 0 wrong answers"):format(requests))
  end)
end)
