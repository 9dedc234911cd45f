-- Run by libmodsecurity's own Lua 5.3 (the `exec:` action of waf_robust.lua's slow rules), on
-- an ATS task thread, inside a phase: makes that phase deterministically slow for the abort
-- tests. The tag (request header X-Slow) is "<name>-<ms>": the script writes
-- $TS_FFI_SANDBOX/slow/<name>.in, sleeps <ms> and writes <name>.out.
function main()
  local tag = m.getvar("REQUEST_HEADERS.X-Slow") or ""
  local name, ms = tag:match("^([%w_]+)%-(%d+)$")
  if not name then return nil end
  local dir = (os.getenv("TS_FFI_SANDBOX") or "/tmp") .. "/slow/"
  local f = io.open(dir .. name .. ".in", "w")
  if f then f:write("in\n") f:close() end
  os.execute(string.format("sleep %.3f", tonumber(ms) / 1000))
  f = io.open(dir .. name .. ".out", "w")
  if f then f:write("out\n") f:close() end
  return nil
end
