-- Remap script for spec/integration/api80_spec.lua: the 8.0 API set in do_remap, hooks and
-- TXN_CLOSE, next to ts_lua's answers, returned as response headers (and a TXN_CLOSE log).
local txn = require "ts_ffi.txn"
local ffi = require "ffi"

ffi.cdef [[
struct api80_sockaddr { unsigned short family; unsigned char port[2]; unsigned char a[4]; unsigned char rest[120]; };
int getpeername(int fd, struct api80_sockaddr *addr, unsigned int *len);
int getsockname(int fd, struct api80_sockaddr *addr, unsigned int *len);
]]

-- "ip:port" of a socket's local or peer end (IPv4), to show an fd is the real socket.
local function sock_end(fd, peer)
  local sa, len = ffi.new("struct api80_sockaddr"), ffi.new("unsigned int[1]", 128)
  local rc = (peer and ffi.C.getpeername or ffi.C.getsockname)(fd, sa, len)
  if rc ~= 0 then return "none" end
  return ("%d.%d.%d.%d:%d"):format(sa.a[0], sa.a[1], sa.a[2], sa.a[3], sa.port[0] * 256 + sa.port[1])
end

local function show(...)
  local t = { ... }
  for i = 1, select("#", ...) do t[i] = tostring(t[i]) end
  return table.concat(t, ",")
end

local function err_of(f, ...)
  local ok, err = pcall(f, ...)
  return ok and "no error" or tostring(err)
end

local function arg(name)
  return (ts.client_request.get_uri_args() or ""):match(name .. "=([^&]+)")
end

local function send_request()
  local c = ts.ctx.r
  local fd, err = txn.server_fd()
  c.sreq_server_fd = show(fd, err)
  c.sreq_ts_server_fd = show(ts.http.get_server_fd())
  c.sreq_fd_peer = fd and sock_end(fd, true) or "none"
  c.sreq_fd_local = fd and sock_end(fd, false) or "none"
  c.sreq_next_hop = show(txn.next_hop_addr())
  c.sreq_ts_next_hop = show(ts.server_request.server_addr.get_nexthop_addr())
  c.sreq_remap = show(txn.remap_from_url(), txn.remap_to_url())
  c.sreq_too_late = show(txn.set_outgoing_addr("127.0.0.9"))
  c.sreq_clear_too_late = show(txn.clear_outgoing_addr())
end

local function send_response()
  local h = ts.client_response.header
  for k, v in pairs(ts.ctx.r) do
    h["X-" .. k:gsub("_", "-")] = v
  end
  h["X-Resp-Aborted"] = show(txn.is_aborted())
end

local function txn_close()
  local f = io.open(os.getenv("TS_FFI_SANDBOX") .. "/api80_close.log", "a")
  f:write(ts.client_request.get_uri(), " aborted=", tostring(txn.is_aborted()),
    " ts_lua=", tostring(ts.http.is_aborted()), "\n")
  f:close()
end

function do_remap()
  local c = {}
  ts.ctx.r = c
  c.remap_urls = show(txn.remap_from_url(), txn.remap_to_url())
  c.ts_remap_urls = show(ts.http.get_remap_from_url(), ts.http.get_remap_to_url())
  c.remap_next_hop = show(txn.next_hop_addr())
  c.remap_server_fd = show(txn.server_fd())
  c.remap_aborted = show(txn.is_aborted())
  local src, port = arg("src"), arg("port")
  if src then
    c.set = show(txn.set_outgoing_addr(src, tonumber(port)))
  elseif arg("clear") then
    c.set = show(txn.clear_outgoing_addr())
  end
  c.bad_addr = err_of(txn.set_outgoing_addr, "300.1.2.3")
  c.bad_port = err_of(txn.set_outgoing_addr, "127.0.0.3", 70000)
  ts.hook(TS_LUA_HOOK_SEND_REQUEST_HDR, send_request)
  ts.hook(TS_LUA_HOOK_SEND_RESPONSE_HDR, send_response)
  ts.hook(TS_LUA_HOOK_TXN_CLOSE, txn_close)
  return 0
end
