-- Remap script for spec/integration/tcpinfo_spec.lua: ts_ffi.tcpinfo on the real client and
-- origin sockets in each hook, next to a hand-written getsockopt(TCP_INFO) on the fds ts_lua
-- reports (ts.http.get_client_fd / get_server_fd), returned as response headers.
local tcpinfo = require "ts_ffi.tcpinfo"
local ffi = require "ffi"

ffi.cdef [[
struct ts_ffi_it_tcp_info { uint8_t state, b[7]; uint32_t rto, ato, snd_mss, rcv_mss, x[9],
  pmtu, rcv_ssthresh, rtt, rttvar, snd_ssthresh, snd_cwnd, advmss; };
int getsockopt(int fd, int level, int name, void *val, unsigned int *len);
]]

-- The kernel's answer for an fd, by hand: the stable fields, as text.
local function raw(fd)
  if not fd then return "nofd" end
  local t = ffi.new("struct ts_ffi_it_tcp_info")
  local len = ffi.new("unsigned int[1]", ffi.sizeof(t))
  if ffi.C.getsockopt(fd, 6, 11, t, len) ~= 0 then return "error" end
  return table.concat({ t.state, t.pmtu, t.advmss, t.snd_mss }, "/")
end

-- ts_ffi's answer: the same stable fields, then the rest worth checking.
local function mine(t, err)
  if not t then return "nil err=" .. tostring(err) end
  return table.concat({ t.state, t.pmtu, t.advmss, t.snd_mss }, "/")
    .. " rtt=" .. t.rtt .. " rto=" .. t.rto .. " segs_in=" .. t.data_segs_in
    .. " segs_out=" .. t.data_segs_out .. " fields=" .. (function()
      local n = 0
      for _ in pairs(t) do n = n + 1 end
      return n
    end)()
end

local function snapshot(which)
  local f = which == "client" and tcpinfo.client or tcpinfo.server
  local fd = which == "client" and ts.http.get_client_fd() or ts.http.get_server_fd()
  return mine(f()) .. " raw=" .. raw(fd)
end

local load_error = select(2, pcall(tcpinfo.client))

local function send_request()
  ts.ctx.send_request = snapshot("server")
end

local function read_response()
  ts.ctx.read_response = snapshot("server")
end

local function send_response()
  local h = ts.client_response.header
  h["X-Remap-Client"] = ts.ctx.remap_client
  h["X-Remap-Server"] = ts.ctx.remap_server
  h["X-Send-Request-Server"] = ts.ctx.send_request
  h["X-Read-Response-Server"] = ts.ctx.read_response
  h["X-Send-Response-Client"] = snapshot("client")
  h["X-Load-Error"] = load_error
end

local function txn_close()
  -- whatever the origin connection's state by now: an answer, never a crash
  local t, err = tcpinfo.server()
  local c, cerr = tcpinfo.client()
  local f = io.open(os.getenv("TS_FFI_SANDBOX") .. "/tcpinfo_close.log", "a")
  f:write("server=", t and ("state " .. t.state) or tostring(err), " client=",
    c and ("state " .. c.state) or tostring(cerr), "\n")
  f:close()
end

function do_remap()
  ts.ctx.remap_client = snapshot("client")
  ts.ctx.remap_server = mine(tcpinfo.server())
  ts.hook(TS_LUA_HOOK_SEND_REQUEST_HDR, send_request)
  ts.hook(TS_LUA_HOOK_READ_RESPONSE_HDR, read_response)
  ts.hook(TS_LUA_HOOK_SEND_RESPONSE_HDR, send_response)
  ts.hook(TS_LUA_HOOK_TXN_CLOSE, txn_close)
  return 0
end
