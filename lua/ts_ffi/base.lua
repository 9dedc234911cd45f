-- ts_ffi.base: what every ts_ffi module shares. The native module, the flat C functions
-- (declared once here), the transaction context lookup, and the error helper that turns a
-- native code into a Lua error (programming errors) or `nil, err` (conditions of the moment).

local ffi = require "ffi"
local native = require "ts_ffi"

local error, getfenv, rawget, rawset, select, type = error, getfenv, rawget, rawset, select, type
local ffi_cast, ffi_gc = ffi.cast, ffi.gc

-- Shared declarations; each area module declares its own flat functions, which take the
-- checked record of the transaction context first and return a code.
-- ts_ffi_ctx is the head of the Rust CtxRec (src/ctx.rs, repr(C)): read only by the JIT path
-- of the cheapest calls (`ts_fn` below).
ffi.cdef [[
typedef struct ts_ffi_ctx { const uint8_t alive; void * const *txn_slot; } ts_ffi_ctx;
void ts_ffi_ctx_release(const ts_ffi_ctx *rec);
]]

local _M = { native = native }

-- The same shared object, opened as an FFI namespace for the flat functions.
local C = ffi.load(native.path)
_M.C = C

-- Codes, by number and by name (the native module is the single source of both).
local code_names = native.code_names
local codes = {}
for num, name in pairs(code_names) do
  codes[name] = num
end
_M.codes = codes
local OK, DECLINED = codes.ok, codes.declined

-- Where ts_ffi keeps its checked record of the transaction context, in the environment ts_lua
-- made for the transaction (so every coroutine of that transaction sees it, and no other).
local REC_KEY = "__ts_ffi_ctx"

local function running_version()
  local v = native.info_version()
  return v or "?"
end

-- Messages for programming errors; `tsfn` is the TS* function a call needs.
local function message(code, tsfn)
  if code == "not_in_ats" then
    return "not running inside traffic_server (the ATS C API, TSTrafficServerVersionGet,"
      .. " is not in this process)"
  elseif code == "missing_fn" then
    local missing = native.last_missing() -- the one the native side looked for
    return (missing ~= "" and missing or tsfn or "a TS* function")
      .. " is missing from this traffic_server ("
      .. running_version() .. ")"
  elseif code == "no_txn" then
    return "no transaction in this context"
  elseif code == "gone" then
    return "no transaction in this context (ts_lua has released this transaction's context;"
      .. " a script whose only hook is a transform loses it after do_remap)"
  elseif code == "unsupported_version" then
    return "unsupported Apache Traffic Server " .. running_version()
      .. ": ts_ffi knows ts_lua's private layout of 9.2.x only (set " .. native.assume_env
      .. "=<major.minor> in traffic_server's environment to try this version anyway)"
  elseif code == "bad_arg" then
    return "bad argument"
  end
  return "internal error (" .. tostring(code) .. ")"
end

-- Raises `fname: msg (at file:line)`: the message starts with the public function's name,
-- and the location is the nearest Lua line outside ts_ffi's own modules (robust to tail
-- calls, unlike error levels). `level` is kept for call sites' readability only.
local getinfo = debug.getinfo
local function throw(fname, msg, level)
  local where = ""
  for lv = 2, 30 do
    local info = getinfo(lv, "Sl")
    if not info then break end
    if info.currentline > 0 and not info.source:find("/ts_ffi/[%w_]+%.lua$") then
      where = " (at " .. info.short_src .. ":" .. info.currentline .. ")"
      break
    end
  end
  error(fname .. ": " .. msg .. where, 0)
end
_M.throw = throw

local function raise(fname, code, tsfn, level)
  throw(fname, message(code, tsfn), level + 1)
end

-- Turns a flat function's non-OK code into `nil, declined` or an error.
-- Called as `return fail(fname, rc, tsfn, declined)` from a public function.
function _M.fail(fname, rc, tsfn, declined)
  if rc == DECLINED then
    return nil, declined
  end
  raise(fname, code_names[rc] or rc, tsfn, 2)
end

-- The checked record of the running transaction's context, for the flat functions.
-- Fast path: the record remembered in the transaction's environment (the flat function
-- checks on the call that ts_lua has not released the context since). Slow path, once per
-- transaction: find and check the context natively.
local acquire = native.ctx_acquire
local rec_ptr_t = ffi.typeof("const ts_ffi_ctx *")
local release = C.ts_ffi_ctx_release

-- Which path the hot calls take, chosen once when ts_ffi is loaded: JIT-compiled FFI wrappers
-- when LuaJIT's JIT compiler is on, C functions (src/fast.rs) when it is off, where an
-- interpreted FFI call is slower than a C function call. Turn the JIT off (jit.off(), or
-- tslua.so's --jit=0) before the first require of a ts_ffi module for it to count.
local interpreted = not require("jit").status()
_M.interpreted = interpreted
local BOX_KEY = native.box_key

-- The slow path, once per transaction. Never compiled (jit.off below): a trace recorded
-- through it would stitch at the C function `acquire`, and a loop trace reaching a get_ctx
-- whose root trace stitches links to it instead of inlining get_ctx (measured: 2x per call).
local function acquire_ctx(fname, env)
  local ud, box = acquire()
  if not ud then
    raise(fname, box, nil, 4)
  end
  local rec = ffi_gc(ffi_cast(rec_ptr_t, ud), release)
  rawset(env, REC_KEY, rec)
  if interpreted then
    rawset(env, BOX_KEY, box) -- for the C functions of the interpreted path
  end
  return rec
end
require("jit").off(acquire_ctx)

function _M.get_ctx(fname)
  local env = getfenv(0)
  local rec = rawget(env, REC_KEY)
  if rec then
    return rec
  end
  rec = acquire_ctx(fname, env)
  return rec
end

-- A short, safe description of an argument for error messages.
function _M.describe(v)
  local t = type(v)
  if t == "string" then
    if #v > 40 or v:find("[%z\1-\31\127-\255]") then
      return "a string of " .. #v .. " bytes"
    end
    return '"' .. v .. '"'
  elseif t == "number" or t == "boolean" or t == "nil" then
    return tostring(v)
  end
  return t
end

-- The public function for `impl` (a Lua/FFI wrapper): `impl` itself with the JIT on; with it
-- off, a C closure that answers the common case itself and otherwise calls `impl` with the
-- same arguments. `name` names the C function in src/fast.rs (`lookup`).
local bind = native.bind
function _M.fast(name, impl)
  if interpreted then
    return bind(name, impl) or impl
  end
  return impl
end

-- The JIT path of the cheapest calls (a TS* getter costs ~1 ns, so an extra call into Rust
-- would double it): a public function checks the record itself (`rec.alive ~= 0`, then
-- `rec.txn_slot[0] ~= nil`: the same two checks as CtxRec::txn) and calls the TS* function
-- through this typed pointer; anything else goes through its flat Rust function, which
-- answers every error. nil with the JIT off (src/fast.rs serves that path) or when this
-- process lacks the function.
function _M.ts_fn(name, ctype)
  if interpreted then
    return nil
  end
  local addr = native.ts_addr(name)
  return addr and ffi_cast(ctype, addr) or nil
end

-- Raises unless the call had no arguments.
function _M.no_args(fname, ...)
  if select("#", ...) ~= 0 then
    throw(fname, "takes no arguments (got " .. select("#", ...) .. ")", 2)
  end
end

-- For natively answered calls: `value...` or `nil, code` → values or an error.
function _M.check(fname, tsfn, v, ...)
  if v == nil and type((...)) == "string" then
    raise(fname, (...), tsfn, 2)
  end
  return v, ...
end

return _M
