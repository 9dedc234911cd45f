-- A small HTTP origin for the integration tests, on loopback, one connection at a time.
-- usage: luajit origin.lua PORT [BIND_ADDR]
-- Every response tells what the origin saw: X-Origin-Peer (the proxy's source address and
-- port) and X-Origin-Path. Paths:
--   /slow-chunked/<bytes>/<block>/<ms>  a chunked body of <bytes> 'x' in blocks, <ms> apart
--   /empty                               200 with an empty body
--   /echo                                200 with the request body (read by Content-Length
--                                        or chunked)
--   /typed/<type>/<subtype>/<page>[/<n>] 200 with that Content-Type and a page (see PAGES);
--                                        <n> bytes of filler come before it
--   /cached/...                          as above, cacheable (max-age=300)
--   Every response counts: X-Origin-Count is the number of requests this origin served.
--   anything else                        200 with body "origin:<path>\n"
local socket = require "socket"

local port, addr = tonumber(arg[1]), arg[2] or "127.0.0.1"
local server = assert(socket.bind(addr, port))
server:settimeout(nil)

-- Response bodies for the WAF's response phase: clean ones and leaks the OWASP CRS knows.
local PAGES = {
  clean = "<html><head><title>Welcome</title></head><body><p>Hello, world.</p></body></html>\n",
  ["sql-error"] = "<html><body><h1>Server Error</h1><p>Unclosed quotation mark after the character "
    .. "string 'O''Brien'. Incorrect syntax near 'Brien'.</p></body></html>\n",
  ["clean-app"] = "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Shop</title>"
    .. "<script src=\"/static/app.js\"></script><script>window.cart = { items: 2, total: \"19.98\" };"
    .. "</script></head><body><form action=\"/search\" method=\"get\"><input name=\"q\">"
    .. "<button>Search</button></form><ul><li><a href=\"/item/1\">Caf\xC3\xA9 mug</a></li>"
    .. "<li><a href=\"/item/2?ref=home&amp;x=1\">Tea &amp; biscuits</a></li></ul>"
    .. "<p>Orders ship in 2&ndash;3 days. Questions? Mail help@example.com.</p></body></html>\n",
  ["clean-json"] = "{\"items\":[{\"id\":1,\"name\":\"Widget\",\"price\":9.99,\"tags\":[\"new\",\"sale\"]},"
    .. "{\"id\":2,\"name\":\"Gadget\",\"price\":19.5,\"tags\":[]}],\"page\":2,\"next\":\"/api/items?page=3\"}\n",
  ["php-source"] = "<?php\n$id = $_GET['id'];\nsession_start();\n$f = fopen('/tmp/x', 'r');\n?>\n",
}

local served = 0

local function respond(c, path, body_in)
  local peer_ip, peer_port = c:getpeername()
  local head = "HTTP/1.1 200 OK\r\nX-Origin-Peer: " .. peer_ip .. ":" .. peer_port
    .. "\r\nX-Origin-Path: " .. path .. "\r\nX-Origin-Count: " .. served .. "\r\nConnection: close\r\n"
  local cached, mtype, stype, page, filler = path:match("^/(%l+)/([%w.+-]+)/([%w.+-]+)/([%w-]+)/?(%d*)")
  if (cached == "typed" or cached == "cached") and PAGES[page] then
    local body = string.rep("-", tonumber(filler) or 0) .. PAGES[page]
    head = head .. "Content-Type: " .. mtype .. "/" .. stype .. "\r\n"
    if cached == "cached" then head = head .. "Cache-Control: public, max-age=300\r\n" end
    c:send(head .. "Content-Length: " .. #body .. "\r\n\r\n" .. body)
    return
  end
  local bytes, block, ms = path:match("^/slow%-chunked/(%d+)/(%d+)/(%d+)")
  if bytes then
    bytes, block, ms = tonumber(bytes), tonumber(block), tonumber(ms)
    c:send(head .. "Transfer-Encoding: chunked\r\n\r\n")
    while bytes > 0 do
      local n = math.min(block, bytes)
      if not c:send(string.format("%x\r\n%s\r\n", n, string.rep("x", n))) then return end
      bytes = bytes - n
      socket.sleep(ms / 1000)
    end
    c:send("0\r\n\r\n")
    return
  end
  local body = path == "/empty" and "" or path:match("^/echo") and body_in
    or ("origin:" .. path .. "\n")
  c:send(head .. "Content-Length: " .. #body .. "\r\n\r\n" .. body)
end

while true do
  local c = server:accept()
  if c then
    c:settimeout(5)
    local line = c:receive("*l")
    local path = line and line:match("^%u+ (%S+)") or "/"
    local length, chunked
    repeat
      local h = c:receive("*l")
      local lh = h and h:lower() or ""
      length = tonumber(lh:match("^content%-length:%s*(%d+)")) or length
      chunked = chunked or lh:match("^transfer%-encoding:%s*chunked") ~= nil
    until not h or h == ""
    local body_in = ""
    if length and length > 0 then
      body_in = c:receive(length) or ""
    elseif chunked then
      local parts = {}
      while true do
        local size = tonumber((c:receive("*l") or "0"):match("^%x+") or "0", 16)
        if size == 0 then c:receive("*l") break end
        parts[#parts + 1] = c:receive(size) or ""
        c:receive("*l")
      end
      body_in = table.concat(parts)
    end
    served = served + 1
    pcall(respond, c, path, body_in)
    c:close()
  end
end
