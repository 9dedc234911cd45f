-- An ATS without a TS* function ts_ffi uses, or an ATS version whose private layout ts_ffi
-- does not know: every public function either works or raises an error that starts with its
-- own name and names what is missing. For each TS* function the double defines, a build of
-- the double lacking it (compiled with -D<name>=<other name>) runs in a subprocess.
local hostile = require "support.hostile"
local ROOT = "build/double_missing"
local ENV = "LUA_PATH='build/tree/share/lua/5.1/?.lua;spec/?.lua;;' LUA_CPATH='build/tree/lib/lua/5.1/?.so;;' "

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("*a")
  local ok = p:close()
  return out, ok
end

-- The TS* functions the double defines (so the real traffic_server may lack them).
local function double_functions()
  local names = {}
  for line in io.lines("spec/double/ts_double.c") do
    local name = line:match("^[%w_ ]+[%s%*]+(_?TS[%w_]+)%(")
    if name then names[#names + 1] = name end
  end
  return names
end

local function probe(so, version)
  local out = sh(ENV .. "luajit spec/support/missing_probe.lua " .. so .. (version and (" " .. version) or ""))
  local rows = {}
  for where, name, status, msg in out:gmatch("([^\t\n]+)\t([^\t\n]+)\t([^\t\n]+)\t([^\n]*)") do
    rows[#rows + 1] = { where = where, name = name, ok = status == "ok", msg = msg }
  end
  assert(out:find("exit\tok", 1, true), "the probe did not finish:\n" .. out)
  return rows
end

describe("a TS* function missing from traffic_server", function()
  local names = double_functions()

  setup(function()
    os.execute("mkdir -p " .. ROOT)
    local cflags = sh("pkg-config --cflags --libs luajit"):gsub("\n", " ")
    for _, name in ipairs(names) do
      local so = ROOT .. "/" .. name .. ".so"
      local out, ok = sh(("cc -O0 -shared -fPIC -D%s=ts_double_omitted_%s spec/double/ts_double.c -o %s %s")
        :format(name, name, so, cflags))
      assert(ok, out)
    end
  end)

  it("is found in the double's source (the list the tests cover)", function()
    assert.truthy(#names >= 10)
  end)

  it("makes each function that needs it raise, naming the function and the missing one", function()
    local failing = 0
    for _, missing in ipairs(names) do
      local rows = probe(ROOT .. "/" .. missing .. ".so")
      for _, r in ipairs(rows) do
        if not r.ok then
          failing = failing + 1
          local prefix = r.name .. ": "
          assert(r.msg:sub(1, #prefix) == prefix, missing .. ": " .. r.msg)
          local only = hostile.ONLY_IN[r.name]
          if only and r.msg:find(prefix .. only.msg:sub(3), 1, true) then
            -- valid only in another kind of context: it says so before needing the function
          elseif missing == "TSTrafficServerVersionGet" then
            -- without it the process is not traffic_server at all
            assert.matches("not running inside traffic_server %(the ATS C API, TSTrafficServerVersionGet", r.msg)
          elseif r.where == "txn" or not r.msg:find("no transaction in this context", 1, true) then
            assert(r.msg:find(prefix .. missing .. " is missing from this traffic_server", 1, true),
              missing .. " missing, " .. r.where .. ": " .. r.msg)
          end
        end
      end
    end
    assert.is_true(failing > 0)
  end)

  it("names exactly the function that is missing, for each call that needs it", function()
    local function outcome(missing, where, name)
      for _, r in ipairs(probe(ROOT .. "/" .. missing .. ".so")) do
        if r.where == where and r.name == name then return r end
      end
    end
    assert.matches("^ts_ffi%.txn%.client_fd: TSHttpTxnClientFdGet is missing from this traffic_server %(9%.2%.9%)",
      outcome("TSHttpTxnClientFdGet", "txn", "ts_ffi.txn.client_fd").msg)
    assert.is_true(outcome("TSHttpTxnClientFdGet", "txn", "ts_ffi.txn.id").ok)
    assert.matches("^ts_ffi%.ssn%.id: TSHttpTxnSsnGet is missing",
      outcome("TSHttpTxnSsnGet", "txn", "ts_ffi.ssn.id").msg)
    assert.matches("^ts_ffi%.txn%.id: _TSmalloc is missing", outcome("_TSmalloc", "txn", "ts_ffi.txn.id").msg)
    assert.matches("^ts_ffi%.txn%.id: TSTrafficServerVersionGetMinor is missing",
      outcome("TSTrafficServerVersionGetMinor", "txn", "ts_ffi.txn.id").msg)
    assert.matches("^ts_ffi%.info%.config_dir: TSConfigDirGet is missing",
      outcome("TSConfigDirGet", "load", "ts_ffi.info.config_dir").msg)
    assert.is_true(outcome("TSConfigDirGet", "load", "ts_ffi.info.version").ok)
  end)
end)

describe("an unsupported ATS version", function()
  it("makes every function that needs a transaction raise, naming the version; info works", function()
    local rows = probe("build/ts_double.so", "10.0.0")
    local raised = 0
    for _, r in ipairs(rows) do
      if r.where == "txn" and not r.ok then
        raised = raised + 1
        assert.matches("^" .. r.name:gsub("%.", "%%.") .. ": unsupported Apache Traffic Server 10%.0%.0: "
          .. "ts_ffi knows ts_lua's private layout of 9%.2%.x only %(set TS_FFI_ASSUME_ATS=", r.msg)
      elseif r.name:find("^ts_ffi%.info%.") then
        assert.is_true(r.ok, r.name .. ": " .. r.msg)
      end
    end
    assert.is_true(raised >= 3)
  end)
end)
