-- make demo: a sandboxed traffic_server on loopback running examples/demo.lua, a few requests,
-- what ts_ffi added to them, then everything stops (DEMO_KEEP=1: it keeps running for curl).
local root = debug.getinfo(1, "S").source:sub(2):match("^(.*)/examples/") or "."
package.path = root .. "/spec/?.lua;" .. package.path
local ats = require "support.ats"

local keep = os.getenv("DEMO_KEEP") == "1"
local sb = ats.start {
  remap = { ["demo.test"] = ats.root .. "/examples/demo.lua" },
  lua_path = false,
}
local ok, err = pcall(function()
  print(("traffic_server %s on 127.0.0.1:%d (sandbox %s), origin on 127.0.0.1:%d\n")
    :format(sb.pid, sb.port, sb.dir, sb.origin_port))
  for i, path in ipairs { "/", "/hello", "/again" } do
    local res = sb:get("demo.test", path)
    if res.status ~= 200 then error("request failed: " .. tostring(res.status) .. "\n" .. sb:diagnostics()) end
    print(("request %d: GET http://demo.test%s -> %d"):format(i, path, res.status))
    local names = {}
    for k in pairs(res.headers) do
      if k:match("^x%-ts%-ffi") then names[#names + 1] = k end
    end
    table.sort(names)
    if #names == 0 then error("ts_ffi added nothing\n" .. sb:diagnostics()) end
    for _, k in ipairs(names) do print(("  %-20s %s"):format(k, res.headers[k])) end
  end
end)
if keep and ok then
  print(("\nDEMO_KEEP=1: still running. Try:\n  curl -i -H 'Host: demo.test' http://127.0.0.1:%d/\n"
    .. "Stop it with: kill %s %s; rm -rf %s"):format(sb.port, sb.pid, sb.origin_pid, sb.dir))
  os.exit(0)
end
sb:stop()
if not ok then
  io.stderr:write(tostring(err), "\n")
  os.exit(1)
end
print("\ndemo done; traffic_server stopped.")
