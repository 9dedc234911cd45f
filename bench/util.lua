-- Helpers shared by the bench drivers (bench/run.lua, bench/waf.lua).
local M = {}

-- A command's output (stderr too), trailing space trimmed, and whether it succeeded.
function M.capture(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local s = p:read("*a")
  local ok = p:close()
  return (s:gsub("%s+$", "")), ok == true or ok == 0
end

-- The median of a list of numbers (nil for an empty list).
function M.median(t)
  local s = {}
  for i, v in ipairs(t) do s[i] = v end
  table.sort(s)
  if #s == 0 then return nil end
  local m = math.floor((#s + 1) / 2)
  return #s % 2 == 1 and s[m] or (s[m] + s[m + 1]) / 2
end

return M
