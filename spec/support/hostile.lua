-- The hostile-input matrix: every public function of every ts_ffi module, called with every
-- hostile argument list, then validly. Used by spec/unit/hostile_spec.lua (ATS double) and,
-- inside traffic_server, by spec/integration/scripts/hostile*.lua.
--
--   local hostile = require "support.hostile"   -- at script load time (no transaction)
--   local r = hostile.run("do_remap", "txn", { oracle = hostile.ts_lua_oracle() })
--   -- r = { context =, kind =, calls =, targets =, failures = { "..." }, results = {...} }
--
-- Targets are found, not listed: every lua/ts_ffi/*.lua of the installed tree except base,
-- required and walked for functions, plus the methods of any table a valid call returns.
-- A new module or function joins automatically. A function that takes arguments declares
-- its valid argument lists in VALID below (default: no arguments).
--
-- Kinds of context:
--   "txn"   a live transaction: every valid call works (may return nil, err), gives the
--           same answer before and after the barrage, and agrees with the oracle.
--   "none"  no transaction: functions that need one raise `<name>: no transaction in this
--           context`; the others work as in "txn".
--   "maybe" a context that may or may not still have its transaction (a coroutine kept from
--           another transaction, a late ts.schedule callback): a valid call either raises
--           `<name>: no transaction in this context` or answers what `opts.same_as` (the
--           owner transaction's answers) says, never another transaction's.
-- Misuse (any hostile argument list longer than the function's arity) must raise a string
-- error starting with `<qualified name>: `; no call may raise anything else.
local ffi = require "ffi"

local M = {}

local function pack(...) return { n = select("#", ...), ... } end

-- Valid argument lists of functions that take arguments, by qualified name.
local function identity(data) return data end
M.VALID = {
  ["ts_ffi.txn.set_outgoing_addr"] = { pack("127.0.0.1"), pack("127.0.0.1", 0) },
  ["ts_ffi.transform.set_watermark"] = { pack(0) },
  ["ts_ffi.transform.response"] = { pack(identity), pack(identity, { min_chunk = 1 }) },
  ["ts_ffi.transform.request"] = { pack(identity), pack(identity, { min_chunk = 1 }) },
  -- a literal answers at once; a name would suspend the running hook until HostDB answers
  ["ts_ffi.dns.lookup"] = { pack("127.0.0.1") },
  -- Debian's geoip-database (the Makefile installs it)
  ["ts_ffi.geoip.open"] = { pack("/usr/share/GeoIP/GeoIP.dat") },
  -- an engine with one harmless rule (no CRS: it loads in microseconds)
  ["ts_ffi.waf.new"] = { pack({ rules = 'SecRuleEngine On\nSecRule ARGS:hostile "@streq x" "id:1,deny"' }) },
}

-- Hostile values that are valid arguments for a function (a handler function registers a
-- transform that would really change the body): left out of its matrix.
M.SKIP_VALUES = {
  ["ts_ffi.transform.response"] = { ["function"] = true, ["erroring function"] = true },
  ["ts_ffi.transform.request"] = { ["function"] = true, ["erroring function"] = true },
  -- host names HostDB would really look up (suspending the hook); "", 1 MB and NUL are
  -- refused at once and stay in
  ["ts_ffi.dns.lookup"] = { ["bad IPv4"] = true, ["bad IPv6"] = true, ["addr:port"] = true,
                            ["port string"] = true },
}

-- Answers that legitimately change during a transaction (the next hop is chosen, the origin
-- connection comes and goes, a setting becomes too late): not compared with the answers of
-- the transaction's earlier contexts (opts.same_as). Identity answers (ids, fds of the
-- client) still are.
M.VARIES = {
  ["ts_ffi.txn.next_hop_addr"] = true, ["ts_ffi.txn.server_fd"] = true,
  ["ts_ffi.txn.is_aborted"] = true, ["ts_ffi.txn.set_outgoing_addr"] = true,
  ["ts_ffi.txn.clear_outgoing_addr"] = true, ["ts_ffi.transform.response"] = true,
  ["ts_ffi.transform.request"] = true, ["ts_ffi.tcpinfo.client"] = true,
  ["ts_ffi.tcpinfo.server"] = true,
}

-- Functions that answer a new object on each call: compared by type, not identity.
M.FRESH = { ["ts_ffi.geoip.open"] = true, ["ts_ffi.geoip.loaded"] = true, ["ts_ffi.waf.new"] = true,
            ["ts_ffi.tcpinfo.client"] = true, ["ts_ffi.tcpinfo.server"] = true }

-- Functions valid only in one kind of context, named by a flag the caller passes in opts
-- (e.g. opts.ts_lua_transform = true inside a ts_lua transform handler). Elsewhere a valid
-- call must raise `<name>: <msg>`; with `lenient`, it may also work (the suite does not
-- tell those contexts apart: dns.lookup works wherever the running coroutine can yield and
-- is the one ts_lua resumes).
local NOT_IN_TRANSFORM = ": not inside a ts_lua transform handler"
M.ONLY_IN = {
  ["ts_ffi.transform.watermark"] = { flag = "ts_lua_transform", msg = NOT_IN_TRANSFORM },
  ["ts_ffi.transform.set_watermark"] = { flag = "ts_lua_transform", msg = NOT_IN_TRANSFORM },
  ["ts_ffi.dns.lookup"] = { flag = "ts_hook", msg = ": cannot yield here", lenient = true },
}

-- ---------------------------------------------------------------- the hostile values
local MB = string.rep("x", 1024 * 1024)
local trap_mt = {
  __index = function() error("trap: __index") end,
  __newindex = function() error("trap: __newindex") end,
  __tostring = function() error("trap: __tostring") end,
  __len = function() error("trap: __len") end,
  __eq = function() error("trap: __eq") end,
  __call = function() error("trap: __call") end,
  __concat = function() error("trap: __concat") end,
}
local values = {
  { "nil", nil }, { "true", true }, { "false", false },
  { "0", 0 }, { "-1", -1 }, { "2^53", 2 ^ 53 }, { "-2^63", -2 ^ 63 }, { "NaN", 0 / 0 },
  { "inf", math.huge }, { "-inf", -math.huge }, { "1.5", 1.5 }, { "-0.0", -0.0 },
  { "empty string", "" }, { "1MB string", MB }, { "NUL inside", "a\0b" }, { "NUL", "\0" },
  { "bad IPv4", "300.1.2.3" }, { "bad IPv6", "::1::2::" }, { "addr:port", "127.0.0.1:70000" },
  { "port 70000", 70000 }, { "port -1", -1 }, { "port string", "70000" },
  { "table", {} }, { "trap table", setmetatable({}, trap_mt) }, { "array", { 1, 2, 3 } },
  { "function", function() end }, { "erroring function", function() error("trap: called") end },
  { "coroutine", coroutine.create(function() end) },
  { "userdata", newproxy(true) }, { "file", io.stdout },
  { "cdata int[1]", ffi.new("int[1]") }, { "NULL pointer", ffi.cast("void *", 0) },
  { "wild pointer", ffi.cast("void *", 1) }, { "int64 cdata", ffi.new("int64_t", -1) },
  { "uint64 max", ffi.new("uint64_t", -1) },
}
for _, v in ipairs(values) do
  if v[1] == "userdata" then
    local mt = getmetatable(v[2])
    mt.__index, mt.__tostring = trap_mt.__index, trap_mt.__tostring
  end
end

-- Argument lists: each value alone, each value as an extra argument after a valid list,
-- and a few shapes (several nils, many arguments, address and port together).
local function matrix(valid, skip)
  skip = skip or {}
  local lists = { { name = "none", args = pack() } }
  for _, v in ipairs(values) do
    if not skip[v[1]] then lists[#lists + 1] = { name = v[1], args = pack(v[2]) } end
  end
  for _, v in ipairs(values) do
    local args = { n = valid.n + 1 }
    for i = 1, valid.n do args[i] = valid[i] end
    args[valid.n + 1] = v[2]
    lists[#lists + 1] = { name = "valid + extra " .. v[1], args = args }
  end
  local many = { n = 40 }
  for i = 1, 40 do many[i] = i end
  lists[#lists + 1] = { name = "three nils", args = pack(nil, nil, nil) }
  lists[#lists + 1] = { name = "40 arguments", args = many }
  lists[#lists + 1] = { name = "address, port", args = pack("300.1.2.3", 70000) }
  lists[#lists + 1] = { name = "NaN, inf", args = pack(0 / 0, math.huge) }
  lists[#lists + 1] = { name = "1MB, NUL", args = pack(MB, "\0") }
  return lists
end

-- ---------------------------------------------------------------- the targets
local function module_dir()
  local path = package.searchpath("ts_ffi.base", package.path)
  return assert(path, "ts_ffi.base not on package.path"):match("^(.*)/base%.lua$")
end

-- Every public module name (ts_ffi.<x>), from the installed files (listed once per VM,
-- at the first call: script load time).
local module_names
function M.modules()
  if module_names then return module_names end
  local names = {}
  local p = assert(io.popen("ls -1 '" .. module_dir() .. "'"))
  for file in p:lines() do
    local name = file:match("^([%w_]+)%.lua$")
    if name and name ~= "base" then names[#names + 1] = "ts_ffi." .. name end
  end
  p:close()
  table.sort(names)
  module_names = names
  return names
end

-- { {name = "ts_ffi.txn.id", prefix = "ts_ffi.txn.id: ", fn = f, valid = {{...}}, arity = n} }
local function module_targets()
  local list = {}
  for _, mod in ipairs(M.modules()) do
    local t = require(mod)
    local keys = {}
    for k, v in pairs(t) do
      if type(v) == "function" then keys[#keys + 1] = k end
    end
    table.sort(keys)
    for _, k in ipairs(keys) do
      local name = mod .. "." .. k
      local valid = M.VALID[name] or { pack() }
      local arity = 0
      for _, a in ipairs(valid) do arity = math.max(arity, a.n or #a) end
      list[#list + 1] = { name = name, prefix = name .. ": ", fn = t[k], valid = valid,
                          arity = arity, module = mod }
    end
  end
  return list
end

-- Methods of objects returned by valid calls: tables (or their __index tables) with function
-- fields. Called with the object as self; errors must name the module.
local function method_targets(target, results)
  local list = {}
  for i = 1, results.n do
    local obj = results[i]
    if type(obj) == "table" then
      local seen, sources = {}, { obj }
      local mt = getmetatable(obj)
      if type(mt) == "table" and type(rawget(mt, "__index")) == "table" then
        sources[2] = rawget(mt, "__index")
      end
      for _, src in ipairs(sources) do
        for k, v in pairs(src) do
          if type(v) == "function" and not seen[k] then
            seen[k] = true
            list[#list + 1] = { name = target.name .. "():" .. tostring(k),
                                prefix = target.module .. ".", fn = v, self = obj,
                                valid = { pack() }, arity = math.huge, module = target.module }
          end
        end
      end
    end
  end
  return list
end

-- ---------------------------------------------------------------- checks
local NO_TXN = ": no transaction in this context"

local function show(v)
  if type(v) == "string" then
    return #v > 80 and ("%q..."):format(v:sub(1, 80)) or ("%q"):format(v)
  end
  local ok, s = pcall(tostring, v)
  return ok and s or type(v)
end

local function same(a, b)
  if a.n ~= b.n then return false end
  for i = 1, a.n do
    local x, y = a[i], b[i]
    if x ~= y and not (x ~= x and y ~= y) then return false end
  end
  return true
end

local function call(target, args)
  if target.self ~= nil then
    return pack(pcall(target.fn, target.self, unpack(args, 1, args.n)))
  end
  return pack(pcall(target.fn, unpack(args, 1, args.n)))
end

local function strip(r) -- pcall results -> call results
  return { n = r.n - 1, unpack(r, 2, r.n) }
end

-- Functions that need a transaction: those that raise "no transaction" when the module is
-- loaded (no transaction at script load time). Filled on the first run outside a txn.
local needs_txn

local function classify(targets)
  needs_txn = {}
  for _, t in ipairs(targets) do
    local r = call(t, t.valid[1])
    if not r[1] and type(r[2]) == "string" and r[2]:sub(1, #t.prefix - 2 + #NO_TXN)
        == t.prefix:sub(1, -3) .. NO_TXN then
      needs_txn[t.name] = true
    end
  end
end

-- The oracle inside traffic_server: ts_lua's own answer for the calls that have one.
function M.ts_lua_oracle(in_txn)
  local o = {
    ["ts_ffi.info.version"] = function() return ts.get_traffic_server_version() end,
    ["ts_ffi.info.install_dir"] = function() return ts.get_install_dir() end,
    ["ts_ffi.info.config_dir"] = function() return ts.get_config_dir() end,
    ["ts_ffi.info.runtime_dir"] = function() return ts.get_runtime_dir() end,
    ["ts_ffi.info.plugin_dir"] = function() return ts.get_plugin_dir() end,
  }
  if in_txn then
    o["ts_ffi.txn.id"] = function() return ts.http.id() end
    o["ts_ffi.ssn.id"] = function() return ts.http.ssn_id() end
    o["ts_ffi.txn.client_fd"] = function() return ts.http.get_client_fd() end
  end
  return o
end

-- Runs the matrix in the calling context. Never raises; returns a report.
function M.run(context, kind, opts)
  opts = opts or {}
  local rep = { context = context, kind = kind, calls = 0, targets = 0, failures = {},
                results = {} }
  local function fail(msg)
    if #rep.failures < 20 then rep.failures[#rep.failures + 1] = msg end
    rep.nfail = (rep.nfail or 0) + 1
  end
  local ok, err = pcall(function()
    local targets = module_targets()
    if not needs_txn then classify(targets) end

    local function check_valid(t, label)
      local only = M.ONLY_IN[t.name]
      local elsewhere = only and not opts[only.flag]
      for _, args in ipairs(t.valid) do
        local r = call(t, args)
        rep.calls = rep.calls + 1
        if elsewhere and not (r[1] and only.lenient) then
          local e = r[2]
          if r[1] or type(e) ~= "string" or e:sub(1, #t.prefix - 2 + #only.msg)
              ~= t.prefix:sub(1, -3) .. only.msg then
            if not (kind ~= "txn" and type(e) == "string" and e:find(NO_TXN, 1, true) == #t.prefix - 1) then
              fail(context .. ": " .. t.name .. " outside its context gave " .. show(e))
            end
          end
        elseif r[1] then
          local res = strip(r)
          if kind == "none" and needs_txn[t.name] then
            fail(context .. ": " .. t.name .. " answered " .. show(res[1]) .. " without a transaction")
          end
          local oracle = opts.oracle and opts.oracle[t.name]
          if oracle and kind ~= "maybe" and res[1] ~= nil then
            local want = pack(oracle())
            if not same({ n = 1, res[1] }, { n = 1, want[1] }) then
              fail(context .. ": " .. t.name .. " = " .. show(res[1]) .. ", ts_lua says " .. show(want[1]))
            end
          end
          local prev = opts.same_as and not M.VARIES[t.name] and not M.FRESH[t.name]
            and opts.same_as[t.name]
          if prev and not same(prev, res) then
            fail(context .. ": " .. t.name .. " = " .. show(res[1]) .. ", its own transaction's is "
              .. show(prev[1]))
          end
          if label == "before" then
            rep.results[t.name] = res
          elseif rep.results[t.name] and not (M.FRESH[t.name]
              and type(rep.results[t.name][1]) == type(res[1]))
              and not same(rep.results[t.name], res) then
            fail(context .. ": " .. t.name .. " changed after the barrage: " .. show(res[1]))
          end
          if label == "before" and kind ~= "none" then
            for _, m in ipairs(method_targets(t, res)) do targets[#targets + 1] = m end
          end
        else
          local e = r[2]
          local allowed = type(e) == "string" and e:sub(1, #t.prefix) == t.prefix
            and (kind ~= "txn" and e:find(NO_TXN, 1, true) == #t.prefix - 1)
          if not allowed then
            fail(context .. ": valid call " .. t.name .. "() raised " .. show(e))
          end
        end
      end
    end

    local n = #targets
    for i = 1, n do check_valid(targets[i], "before") end
    rep.targets = #targets
    for _, t in ipairs(targets) do
      for _, list in ipairs(matrix(t.valid[1], M.SKIP_VALUES[t.name])) do
        local r = call(t, list.args)
        rep.calls = rep.calls + 1
        if r[1] then
          if list.args.n > t.arity then
            fail(context .. ": " .. t.name .. "(" .. list.name .. ") did not raise")
          end
        elseif type(r[2]) ~= "string" or r[2]:sub(1, #t.prefix) ~= t.prefix then
          fail(context .. ": " .. t.name .. "(" .. list.name .. ") raised " .. show(r[2]))
        end
      end
    end
    for i = 1, n do check_valid(targets[i], "after") end
  end)
  if not ok then fail(context .. ": the suite itself failed: " .. show(err)) end
  rep.nfail = rep.nfail or 0
  return rep
end

-- One line for a log file: "context=<c> kind=<k> targets=<n> calls=<n> failures=<n> | first".
function M.line(rep)
  return ("context=%s kind=%s targets=%d calls=%d failures=%d%s"):format(rep.context, rep.kind,
    rep.targets, rep.calls, rep.nfail, rep.failures[1] and (" | " .. rep.failures[1]:gsub("\n", " ")) or "")
end

-- Inside traffic_server: runs and appends the line to $TS_FFI_SANDBOX/hostile.log.
function M.report(context, kind, opts)
  local rep = M.run(context, kind, opts)
  local f = io.open((os.getenv("TS_FFI_SANDBOX") or "/tmp") .. "/hostile.log", "a")
  if f then
    f:write(M.line(rep), "\n")
    f:close()
  end
  return rep
end

return M
