-- Loads the ATS test double (build/ts_double.so) globally, before ts_ffi resolves the TS*
-- API from the process, and returns its Lua side (see spec/double/ts_double.c).
local root = debug.getinfo(1, "S").source:sub(2):match("^(.*)/spec/support/") or "."
local path = root .. "/build/ts_double.so"
assert(package.loadlib(path, "*"), "cannot load " .. path .. " (make double)")
local double = assert(package.loadlib(path, "luaopen_ts_double"))()

-- Runs fn(...) inside a fresh fake transaction; returns its results (raises its error).
function double.in_txn(fn, ...)
  local thread, ctx = double.new_txn()
  local res = { double.run(thread, fn, ...) }
  if not res[1] then error(res[2], 0) end
  return unpack(res, 2)
end

-- The error message of fn(...), which must fail.
function double.error_of(fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error")
  return err
end

return double
