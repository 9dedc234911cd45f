-- Remap script for spec/integration/concurrency_spec.lua. ts_ffi is required lazily, in the
-- first transaction each VM serves, so the first uses of ts_ffi's process-wide state (the
-- resolved API, the memory-probe mode, the pinned module path) race across VMs and threads.
-- Every response carries ts_ffi's answers next to ts_lua's, from do_remap and from a hook.
local ffi = require "ffi"
ffi.cdef "long syscall(long number, ...);"

local VM = tostring(package.loaded):match("0x%x+") -- one table per VM
local txn, ssn, native

local function triple()
  return ("%d/%d %d/%d %d/%d"):format(txn.id(), ts.http.id(), ssn.id(), ts.http.ssn_id(),
    txn.client_fd(), ts.http.get_client_fd())
end

function do_remap()
  if ts.client_request.get_uri() == "/watched" then
    native = native or require "ts_ffi"
    ts.ctx.watched = native.ctx_watched()
    ts.hook(TS_LUA_HOOK_SEND_RESPONSE_HDR, function()
      ts.client_response.header["X-Watched"] = ts.ctx.watched
    end)
    return 0
  end
  if not txn then
    txn, ssn = require "ts_ffi.txn", require "ts_ffi.ssn"
  end
  ts.ctx.r = triple()
  -- misuse on every request too: errors built concurrently must still name their function
  local _, e1 = pcall(txn.id, {})
  local _, e2 = pcall(ssn.id, 1)
  ts.ctx.misuse = (tostring(e1):find("^ts_ffi%.txn%.id: takes no arguments")
    and tostring(e2):find("^ts_ffi%.ssn%.id: takes no arguments")) and "ok" or (tostring(e1) .. " | " .. tostring(e2))
  ts.hook(TS_LUA_HOOK_SEND_RESPONSE_HDR, function()
    local h = ts.client_response.header
    h["X-R"] = ts.ctx.r
    h["X-H"] = triple()
    h["X-Misuse"] = ts.ctx.misuse
    h["X-Vm-R"] = VM
    h["X-Tid"] = tonumber(ffi.C.syscall(186)) -- gettid
  end)
  ts.hook(TS_LUA_HOOK_TXN_CLOSE, function()
    local t = triple()
    local a, b = t:match("^(%d+)/(%d+)")
    if a ~= b or t:match("^%S+") ~= ts.ctx.r:match("^%S+") then
      local f = io.open(os.getenv("TS_FFI_SANDBOX") .. "/conc_errors.log", "a")
      f:write("TXN_CLOSE ", t, " remap ", ts.ctx.r, "\n")
      f:close()
    end
  end)
  return 0
end
