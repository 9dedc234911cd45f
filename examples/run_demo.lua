-- make demo: a sandboxed traffic_server on loopback running every example script (one remap
-- rule each), a few requests to each, what ts_ffi added to them, then everything stops
-- (DEMO_KEEP=1: it keeps running for curl).
local root = debug.getinfo(1, "S").source:sub(2):match("^(.*)/examples/") or "."
package.path = root .. "/spec/?.lua;" .. package.path
local ats = require "support.ats"

local E = ats.root .. "/examples/"

-- Each example: the host its remap rule maps, its script (and @pparams), the requests to
-- send (path, extra curl arguments, what the request shows) and the headers to print.
local EXAMPLES = {
  {
    name = "demo.lua: what ts_ffi knows about each request",
    host = "demo.test", script = E .. "demo.lua", show = "^x%-ts%-ffi",
    requests = { { "/" }, { "/hello" }, { "/again" } },
  },
  {
    name = "x_tcp_rtt.lua: the client connection's round-trip time (µs), from TCP_INFO",
    host = "rtt.test", script = E .. "x_tcp_rtt.lua", show = "^x%-tcp%-",
    requests = { { "/" }, { "/again" } },
  },
  {
    name = "x_country.lua: the client's country from Debian's GeoIP databases "
      .. "(the demo gives the address in X-Forwarded-For: on loopback every client is 127.0.0.1)",
    host = "country.test", script = { E .. "x_country.lua", "trust-x-forwarded-for" },
    show = "^x%-country",
    requests = {
      { "/", "X-Forwarded-For: 8.8.8.8" },
      { "/", "X-Forwarded-For: 10.1.1.1, 81.2.69.142" },
      { "/", "X-Forwarded-For: 2001:4860:4860::8888" },
      { "/", nil, "(no X-Forwarded-For: 127.0.0.1 has no country, so no header)" },
    },
  },
  {
    name = "nexthop.lua: which origin served the request (X-Nexthop)",
    host = "nexthop.test", script = E .. "nexthop.lua", show = "^x%-nexthop",
    requests = { { "/" } },
  },
  {
    name = "outgoing_addr.lua: /premium/ leaves for the origin from 127.0.0.2 "
      .. "(X-Origin-Peer is the source address the origin saw)",
    host = "outgoing.test", script = E .. "outgoing_addr.lua", show = "^x%-origin%-peer",
    requests = { { "/premium/offer" }, { "/standard" } },
  },
  {
    name = "waf.lua: ModSecurity with the OWASP CRS on requests and response bodies (a status "
      .. "other than 200 is the WAF's answer)",
    host = "waf.test", script = E .. "waf.lua",
    requests = {
      { "/search?q=hello+world", nil, "(a clean request passes)" },
      { "/search?q=1%27%20OR%20%271%27%3D%271", nil, "(SQL injection in the query: denied)", 403 },
      { "/?testparam=test", nil, "(the talk's custom rule: denied)", 403 },
      { "/typed/text/html/sql-error", nil, "(the origin's page leaks an SQL error: the body is held "
        .. "back, inspected, and replaced)", 403 },
      { "/typed/text/html/clean-app", nil, "(a clean page passes after inspection)" },
    },
  },
}

local keep = os.getenv("DEMO_KEEP") == "1"
local remap = {}
for _, ex in ipairs(EXAMPLES) do remap[ex.host] = ex.script end
local sb = ats.start { remap = remap, lua_path = false }

local ok, err = pcall(function()
  print(("traffic_server %s on 127.0.0.1:%d (sandbox %s), origin on 127.0.0.1:%d")
    :format(sb.pid, sb.port, sb.dir, sb.origin_port))
  for _, ex in ipairs(EXAMPLES) do
    print("\n" .. ex.name)
    for i, req in ipairs(ex.requests) do
      local path, header, note, want = req[1], req[2], req[3], req[4] or 200
      local res = sb:get(ex.host, path, { curl = header and ("-H '" .. header .. "'") or "" })
      if res.status ~= want then
        error("request failed: " .. tostring(res.status) .. "\n" .. sb:diagnostics())
      end
      print(("request %d: GET http://%s%s%s -> %d %s"):format(i, ex.host, path,
        header and (" (" .. header .. ")") or "", res.status, note or ""))
      local names = {}
      for k in pairs(res.headers) do
        if ex.show and k:match(ex.show) then names[#names + 1] = k end
      end
      table.sort(names)
      if #names == 0 and not note then error(ex.host .. ": ts_ffi added nothing\n" .. sb:diagnostics()) end
      for _, k in ipairs(names) do print(("  %-20s %s"):format(k, res.headers[k])) end
    end
  end
end)
if keep and ok then
  print(("\nDEMO_KEEP=1: still running. Try:\n  curl -i -H 'Host: demo.test' http://127.0.0.1:%d/\n"
    .. "  curl -i -H 'Host: country.test' -H 'X-Forwarded-For: 8.8.8.8' http://127.0.0.1:%d/\n"
    .. "Stop it with: kill %s %s; rm -rf %s"):format(sb.port, sb.port, sb.pid, sb.origin_pid, sb.dir))
  os.exit(0)
end
sb:stop()
if not ok then
  io.stderr:write(tostring(err), "\n")
  os.exit(1)
end
print("\ndemo done; traffic_server stopped.")
