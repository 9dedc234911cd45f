-- Soak script (spec/integration/soak_spec.lua, `make soak`): ts_ffi in several hooks of every
-- request, each answer checked against ts_lua's own; a mismatch turns the response into a
-- 500 (so wrk counts it) and is counted. Loaded as a remap script (JIT on, the FFI path) and
-- as a global script with --jit=0 (the interpreted path). Each Lua VM writes its counts to
-- $TS_FFI_SANDBOX/soak.<kind>.<vm>.txt: "txns calls mismatches errors".
local txn = require "ts_ffi.txn"
local ssn = require "ts_ffi.ssn"
local base = require "ts_ffi.base"

local KIND = base.interpreted and "interp" or "jit"
local OUT = os.getenv("TS_FFI_SANDBOX") .. "/soak." .. KIND .. "."
  .. tostring({}):match("0x(%x+)") .. ".txt"
local txns, calls, mismatches, errors, last_flush = 0, 0, 0, 0, 0

local function flush(force)
  local now = ts.now()
  if force or now - last_flush >= 0.5 then
    last_flush = now
    local f = io.open(OUT, "w")
    if f then
      f:write(txns, " ", calls, " ", mismatches, " ", errors, "\n")
      f:close()
    end
  end
end

-- Three calls, compared with ts_lua; at TXN_CLOSE the client may already be gone.
local function check(where, closing)
  local ok, err = pcall(function()
    local id, sid, fd = txn.id(), ssn.id(), txn.client_fd()
    calls = calls + 3
    local same = id == ts.http.id() and sid == ts.http.ssn_id()
      and (fd == ts.http.get_client_fd() or (closing and fd == nil))
    if not same then
      mismatches = mismatches + 1
      ts.error("ts_ffi soak mismatch in " .. where .. ": " .. tostring(id) .. "/"
        .. tostring(sid) .. "/" .. tostring(fd))
      ts.ctx.bad = true
    end
  end)
  if not ok then
    errors = errors + 1
    ts.error("ts_ffi soak error in " .. where .. ": " .. tostring(err))
    ts.ctx.bad = true
  end
end

local function read_response() check("read_response") end

local function send_response()
  check("send_response")
  if ts.ctx.bad then ts.client_response.set_status(500) end
  ts.client_response.header["X-Soak-" .. KIND] = txn.id()
end

local function txn_close()
  check("txn_close", true)
  txns = txns + 1
  flush()
end

function do_remap()
  check("remap")
  ts.hook(TS_LUA_HOOK_READ_RESPONSE_HDR, read_response)
  ts.hook(TS_LUA_HOOK_SEND_RESPONSE_HDR, send_response)
  ts.hook(TS_LUA_HOOK_TXN_CLOSE, txn_close)
  return 0
end

-- As a global script: the same checks in do_global_* hooks.
function do_global_read_request()
  check("global_read_request")
  return 0
end

function do_global_send_response()
  send_response()
  txns = txns + 1
  flush()
  return 0
end
