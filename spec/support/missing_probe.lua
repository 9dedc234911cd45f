-- Run by spec/unit/missing_spec.lua in a subprocess: loads a build of the ATS double that
-- lacks one TS* function (argument 1: its path), then calls every public function validly,
-- at load time and inside a fake transaction, printing "where<TAB>name<TAB>ok|err<TAB>msg".
-- Argument 2, "10.0.0" style, makes the double report that ATS version instead.
local path, version = arg[1], arg[2]
assert(package.loadlib(path, "*"), "cannot load " .. path)
local double = assert(package.loadlib(path, "luaopen_ts_double"))()
if version then
  local a, b, c = version:match("^(%d+)%.(%d+)%.(%d+)$")
  double.set_version(tonumber(a), tonumber(b), tonumber(c))
end
local hostile = require "support.hostile"

local function each(where)
  for _, mod in ipairs(hostile.modules()) do
    local names = {}
    for k, v in pairs(require(mod)) do
      if type(v) == "function" then names[#names + 1] = k end
    end
    table.sort(names)
    for _, k in ipairs(names) do
      local args = hostile.VALID[mod .. "." .. k] or { {} }
      local ok, err = pcall(require(mod)[k], unpack(args[1]))
      print(where .. "\t" .. mod .. "." .. k .. "\t" .. (ok and "ok" or "err") .. "\t"
        .. (ok and "" or tostring(err)))
    end
  end
end

each("load")
local thread = double.new_txn()
assert(double.run(thread, each, "txn"))
print("exit\tok")
