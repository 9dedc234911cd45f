-- Soak: wrk against the sandbox proxy with an nginx origin, ts_ffi called in several hooks of
-- every request on both paths (remap script, JIT on; global script with --jit=0, the
-- interpreted path), each answer checked against ts_lua's. Pass: every response 2xx, no
-- socket error, no mismatch or error in any VM, traffic_server alive.
-- `make test` runs it for ~10 s (TS_FFI_SOAK_SECONDS); `make soak` for 60 s after a warm-up
-- (TS_FFI_SOAK_WARMUP) and also checks traffic_server's RSS growth (TS_FFI_SOAK_RSS=1: < 5%).
local ats = require "support.ats"
local load = require "support.load"

local SECONDS = tonumber(os.getenv("TS_FFI_SOAK_SECONDS")) or 10
local WARMUP = tonumber(os.getenv("TS_FFI_SOAK_WARMUP")) or 0
local CHECK_RSS = os.getenv("TS_FFI_SOAK_RSS") == "1"
local SCRIPT = ats.root .. "/spec/integration/scripts/soak.lua"

local function counts(dir)
  local total = { jit = { 0, 0, 0, 0 }, interp = { 0, 0, 0, 0 }, vms = 0 }
  local p = io.popen("ls " .. dir .. "/soak.*.txt 2>/dev/null")
  for path in p:read("*a"):gmatch("[^\n]+") do
    local kind = path:match("/soak%.(%a+)%.")
    local f = io.open(path)
    local line = f and f:read("*l") or ""
    if f then f:close() end
    local i = 0
    for n in line:gmatch("%d+") do
      i = i + 1
      total[kind][i] = total[kind][i] + tonumber(n)
    end
    total.vms = total.vms + 1
  end
  p:close()
  return total
end

describe("soak (" .. SECONDS .. " s" .. (CHECK_RSS and ", RSS" or "") .. ")", function()
  local origin, sb

  setup(function()
    origin = load.nginx {}
    sb = ats.start {
      origin_port = origin.port,
      records = { "CONFIG proxy.config.diags.debug.enabled INT 0" },
      remap = { ["soak.test"] = SCRIPT },
      global = "--jit=0 " .. SCRIPT,
    }
  end)

  teardown(function()
    if sb then sb:stop() end
    if origin then origin:stop() end
  end)

  it("answers every request with 2xx, ts_ffi agreeing with ts_lua in every hook", function()
    local first = sb:get("soak.test", "/")
    assert.equal(200, first.status, sb:diagnostics())
    assert.truthy(first.headers["x-soak-jit"], "remap script did not run")
    assert.truthy(first.headers["x-soak-interp"], "global --jit=0 script did not run")

    if WARMUP > 0 then
      local w = load.wrk { port = sb.port, host = "soak.test", seconds = WARMUP, connections = 16 }
      assert.equal(0, w.non2xx + w.socket_errors, w.raw)
    end
    local rss0 = load.rss_kb(sb.pid)
    local run = load.wrk { port = sb.port, host = "soak.test", seconds = SECONDS,
                           connections = 16, count_status = true, background = true }
    local samples = { rss0 }
    while run.running() do
      load.sleep(1)
      samples[#samples + 1] = load.rss_kb(sb.pid)
    end
    local r = run.wait()
    local rss1 = load.rss_kb(sb.pid)
    load.sleep(0.6) -- let every VM flush its counts (on its next transaction)
    for _ = 1, 8 do sb:get("soak.test", "/flush") end
    load.sleep(0.6)
    for _ = 1, 8 do sb:get("soak.test", "/flush") end
    local c = counts(sb.dir)

    local peak = 0
    for _, v in ipairs(samples) do peak = math.max(peak, v or 0) end
    local growth = rss0 and rss1 and (rss1 - rss0) / rss0 or 0
    local summary = string.format("soak %ds (warm-up %ds): %d requests (%.0f/s), %d 2xx, "
      .. "%d non-2xx, %d socket errors; ts_ffi calls since start (warm-up included): %d on the JIT path (%d txns), %d on the "
      .. "interpreted path (%d txns), %d mismatches, %d errors, %d VMs; traffic_server RSS "
      .. "%d kB after warm-up, %d kB at end (%+.2f%%), peak %d kB",
      SECONDS, WARMUP, r.requests, r.rps, r.count_2xx, r.not_2xx, r.socket_errors,
      c.jit[2], c.jit[1], c.interp[2], c.interp[1], c.jit[3] + c.interp[3],
      c.jit[4] + c.interp[4], c.vms, rss0 or -1, rss1 or -1, growth * 100, peak)
    print("# " .. summary)
    local f = io.open(ats.root .. "/build/soak-summary.txt", "w")
    if f then f:write(summary, "\n"); f:close() end

    assert.is_true(r.requests > 0, r.raw)
    assert.equal(r.requests, r.count_2xx, summary .. "\n" .. r.raw)
    assert.equal(0, r.socket_errors, summary .. "\n" .. r.raw)
    assert.equal(0, c.jit[3] + c.interp[3], summary .. "\n" .. sb:diagnostics())
    assert.equal(0, c.jit[4] + c.interp[4], summary .. "\n" .. sb:diagnostics())
    assert.is_true(c.jit[2] > 0 and c.interp[2] > 0, summary)
    assert.is_true(sb:alive())
    assert.falsy(sb:log("diags.log"):find("FATAL", 1, true))
    if CHECK_RSS then
      assert.is_true(growth < 0.05, summary)
    end
  end)
end)
