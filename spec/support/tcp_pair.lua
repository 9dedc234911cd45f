-- A connected loopback TCP pair (client side, accepted side), with a little traffic both
-- ways, for the tcpinfo specs (real sockets on the ATS double).
local socket = require "socket"

return function()
  local srv = assert(socket.bind("127.0.0.1", 0))
  srv:settimeout(5)
  local ip, port = srv:getsockname()
  local c = assert(socket.connect(ip, port))
  c:settimeout(5)
  local a = assert(srv:accept())
  a:settimeout(5)
  srv:close()
  assert(c:send("ping\n"))
  assert(a:receive("*l"))
  assert(a:send("pong\n"))
  assert(c:receive("*l"))
  return c, a
end
