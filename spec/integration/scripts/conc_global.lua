-- Global script (plugin.config, loaded with --enable-reload) for concurrency_spec.lua:
-- ts_ffi required lazily in each VM's first transaction; answers in do_global_* hooks; a
-- __reload__ that counts reloads per VM (in a table that survives the script's re-run) and
-- checks ts_ffi there (no transaction: an error naming the function; info works).
local ffi = require "ffi"
local VM = tostring(package.loaded):match("0x%x+")
local state = package.loaded["conc_global.state"] or { gen = 0 }
package.loaded["conc_global.state"] = state
local txn, ssn

local function triple()
  if not txn then -- the first use in this VM (or in this run of the script, after a reload)
    txn, ssn = require "ts_ffi.txn", require "ts_ffi.ssn"
  end
  return ("%d/%d %d/%d %d/%d"):format(txn.id(), ts.http.id(), ssn.id(), ts.http.ssn_id(),
    txn.client_fd(), ts.http.get_client_fd())
end

function __reload__()
  state.gen = state.gen + 1
  local ok, err = pcall(require("ts_ffi.txn").id)
  local f = io.open(os.getenv("TS_FFI_SANDBOX") .. "/reload.log", "a")
  f:write(("vm=%s gen=%d txn_ok=%s version=%s err=%s\n"):format(VM, state.gen, tostring(ok),
    require("ts_ffi.info").version(), tostring(err)))
  f:close()
end

local function wanted()
  return ts.client_request.get_uri() ~= "/watched"
end

function do_global_read_request()
  if not wanted() then return 0 end
  ts.client_request.header["X-G-Read"] = triple()
  return 0
end

function do_global_send_response()
  if not wanted() then return 0 end
  local h = ts.client_response.header
  h["X-G"] = triple()
  h["X-G-Read"] = ts.client_request.header["X-G-Read"]
  h["X-Vm-G"] = VM
  h["X-Gen"] = state.gen
  return 0
end
