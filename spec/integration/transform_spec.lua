-- ts_ffi's own transform inside a real traffic_server, in a script with no ts.hook at all:
-- pieces of at least min_chunk bytes, eos exactly once (also for empty and chunked bodies),
-- the same bytes to the client, errors logged and passed through, request bodies, too late,
-- clients that leave mid-body, concurrency.
local ats = require "support.ats"

local S = ats.root .. "/spec/integration/scripts/"

describe("ts_ffi.transform inside traffic_server", function()
  local sb

  setup(function()
    sb = ats.start { remap = { ["t.test"] = S .. "own_transform.lua" } }
  end)

  teardown(function()
    if sb then sb:stop() end
  end)

  -- The handler's log line for `uri` (written at eos).
  local function logged(uri)
    local pattern = "\n" .. uri:gsub("%p", "%%%0") .. " (calls=[^\n]*)"
    for _ = 1, 50 do
      local f = io.open(sb.dir .. "/transform.log")
      local text = f and ("\n" .. f:read("*a")) or ""
      if f then f:close() end
      local line = text:match(pattern)
      if line then return line end
      os.execute("sleep 0.05")
    end
  end

  local function fields(line)
    local t = {}
    for k, v in (line or ""):gmatch("(%w+)=(%S+)") do t[k] = v end
    return t
  end

  it("slow chunked 200 KB with min_chunk 65536: at most 4 calls, eos once, same bytes", function()
    local res = sb:get("t.test", "/slow-chunked/200000/1000/2?min=65536", { timeout = 30 })
    assert.equal(200, res.status)
    assert.equal(200000, #res.body)
    assert.falsy(res.body:find("[^x]"))
    local f = fields(logged("/slow-chunked/200000/1000/2"))
    assert.is_true(tonumber(f.calls) <= 4, f.calls)
    local sizes, eos = {}, {}
    for n in f.sizes:gmatch("%d+") do sizes[#sizes + 1] = tonumber(n) end
    for n in f.eos:gmatch("%d") do eos[#eos + 1] = n end
    assert.equal("1", eos[#eos])
    assert.falsy(table.concat(eos):sub(1, -2):find("1"), "eos only on the last call")
    local total = 0
    for i, n in ipairs(sizes) do
      total = total + n
      if i < #sizes then assert.is_true(n >= 65536, "piece " .. i .. " is " .. n) end
    end
    assert.equal(200000, total)
  end)

  it("an empty body gives exactly one call, with eos", function()
    local res = sb:get("t.test", "/empty")
    assert.equal(200, res.status)
    assert.equal("", res.body)
    local f = fields(logged("/empty"))
    assert.same({ "1", "0", "1" }, { f.calls, f.sizes, f.eos })
  end)

  it("what the handler returns is what the client gets", function()
    assert.equal("ORIGIN:/UP?MODE=UPPER\n", sb:get("t.test", "/up?mode=upper").body)
    local res = sb:get("t.test", "/slow-chunked/5000/1000/10?mode=hold")
    assert.equal(5000, #res.body) -- held back, all sent at eos
  end)

  it("ts.* and ts_ffi work in the handler although the script has no ts.hook", function()
    sb:get("t.test", "/ids")
    local id, ts_id = fields(logged("/ids")).id:match("^(%d+)/(%d+)$")
    assert.truthy(id)
    assert.equal(ts_id, id)
  end)

  it("a handler error is logged with its location and the body passes through", function()
    local res = sb:get("t.test", "/f?mode=fail")
    assert.equal("origin:/f?mode=fail\n", res.body)
    res = sb:get("t.test", "/y?mode=yield")
    assert.equal("origin:/y?mode=yield\n", res.body)
    res = sb:get("t.test", "/n?mode=number")
    assert.equal("origin:/n?mode=number\n", res.body)
    local log = sb:log("diags.log")
    assert.matches("%[ts_ffi%] transform handler defined at [^\n]*own_transform%.lua:%d+ failed: "
      .. "[^\n]*own_transform%.lua:%d+: deliberate failure", log)
    assert.matches("attempt to yield across C%-call boundary", log)
    assert.matches("handler returned a number", log)
  end)

  it("request(): the request body goes through the handler; a bodiless request never calls it", function()
    local res = sb:get("t.test", "/echo?request=1&mode=upper", { curl = "--data-binary hello-body" })
    assert.equal(200, res.status)
    assert.equal("HELLO-BODY", res.body)
    local f = fields(logged("/echo request"))
    assert.equal("1", f.eos:sub(-1))
    sb:get("t.test", "/get?request=1")
    assert.is_nil(logged("/get request"))
  end)

  it("returns nil, 'too late' once the response has started", function()
    local res = sb:get("t.test", "/late?late=1")
    assert.equal("nil,too late: this transaction's response body has already started",
      res.headers["x-late"])
  end)

  it("chains with its own transforms and ts_lua's without spinning", function()
    -- a ts_lua transform after ts_ffi's once made them wake each other forever
    for _, args in ipairs { "lua=1", "chain=2", "chain=2&lua=1&min=5000" } do
      local res = sb:get("t.test", "/slow-chunked/50000/1000/2?" .. args, { timeout = 20 })
      assert.equal(200, res.status, args)
      assert.equal(50000, #res.body, args)
    end
  end)

  it("survives clients that leave mid-body, and 30 concurrent transforms", function()
    for _ = 1, 5 do
      sb:get("t.test", "/slow-chunked/400000/1000/5?min=4096", { timeout = 1 })
    end
    local paths = {}
    for i = 1, 30 do paths[i] = "/slow-chunked/20000/1000/5?min=8192&i=" .. i end
    for _, res in ipairs(sb:get_parallel("t.test", paths)) do
      assert.equal(200, res.status)
      assert.equal(20000, #res.body)
    end
    assert.is_true(sb:alive())
    assert.equal("origin:/after\n", sb:get("t.test", "/after").body)
  end)
end)
