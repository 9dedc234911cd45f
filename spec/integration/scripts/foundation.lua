-- Remap script for spec/integration/foundation_spec.lua: answers from ts_ffi next to ts_lua's
-- own, in every context, returned to the client as response headers.
local info = require "ts_ffi.info"
local txn = require "ts_ffi.txn"
local ssn = require "ts_ffi.ssn"
local ffi = require "ffi"

ffi.cdef [[
struct ts_ffi_test_sockaddr { unsigned short family; unsigned char port[2]; unsigned char rest[124]; };
int getpeername(int fd, struct ts_ffi_test_sockaddr *addr, unsigned int *len);
]]

-- The peer port of a socket fd, to show that an fd is the real client socket.
local function peer_port(fd)
  local sa, len = ffi.new("struct ts_ffi_test_sockaddr"), ffi.new("unsigned int[1]", 128)
  if ffi.C.getpeername(fd, sa, len) ~= 0 then return -1 end
  return sa.port[0] * 256 + sa.port[1]
end

local function err_of(f, ...)
  local ok, err = pcall(f, ...)
  return ok and "no error" or tostring(err)
end

-- At load time there is no transaction; info works.
local load_errors = {
  txn_id = err_of(txn.id), client_fd = err_of(txn.client_fd), ssn_id = err_of(ssn.id),
}
local load_version = info.version()

local init_error
function __init__(argtb)
  init_error = err_of(txn.id)
end

-- A snapshot of ts_ffi's answers and ts_lua's, as one header value.
local function snapshot(where)
  local _, client_port = ts.client_request.client_addr.get_addr()
  local fd = txn.client_fd()
  return table.concat({
    where,
    "id=" .. txn.id(), "ts_id=" .. ts.http.id(),
    "ssn=" .. ssn.id(), "ts_ssn=" .. ts.http.ssn_id(),
    "fd=" .. fd, "ts_fd=" .. ts.http.get_client_fd(),
    "fd_peer=" .. peer_port(fd), "client_port=" .. client_port,
  }, " ")
end

local function results_file()
  return os.getenv("TS_FFI_SANDBOX") .. "/txn_close.log"
end

local function send_response()
  ts.client_response.header["X-Remap"] = ts.ctx.remap
  ts.client_response.header["X-Hook"] = snapshot("hook")
  ts.client_response.header["X-Version"] = info.version()
  ts.client_response.header["X-Ts-Version"] = ts.get_traffic_server_version()
  local v = { info.version_number() }
  ts.client_response.header["X-Version-Number"] = table.concat(v, ",") .. "," .. #v
    .. "," .. type(v[1])
  ts.client_response.header["X-Dirs"] = table.concat({ info.install_dir(), info.config_dir(),
    info.runtime_dir(), info.plugin_dir() }, "|")
  ts.client_response.header["X-Ts-Dirs"] = table.concat({ ts.get_install_dir(),
    ts.get_config_dir(), ts.get_runtime_dir(), ts.get_plugin_dir() }, "|")
  ts.client_response.header["X-Load-Errors"] = load_errors.txn_id .. " | " .. load_errors.client_fd
    .. " | " .. load_errors.ssn_id
  ts.client_response.header["X-Load-Version"] = load_version
  ts.client_response.header["X-Init-Error"] = init_error
  -- a coroutine the script creates inside the transaction shares its context
  local co = coroutine.create(function() return txn.id() end)
  local ok, id = coroutine.resume(co)
  ts.client_response.header["X-Coroutine"] = tostring(ok) .. " " .. tostring(id)
  ts.client_response.header["X-Bad-Arg"] = err_of(txn.id, 1)
end

local function txn_close()
  local f = io.open(results_file(), "a")
  f:write(snapshot("close"), "\n")
  f:close()
end

function do_remap()
  ts.ctx.remap = snapshot("remap")
  ts.hook(TS_LUA_HOOK_SEND_RESPONSE_HDR, send_response)
  ts.hook(TS_LUA_HOOK_TXN_CLOSE, txn_close)
  return 0
end
