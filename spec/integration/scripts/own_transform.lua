-- Remap script for spec/integration/transform_spec.lua: ts_ffi's own transform, with no
-- ts.hook at all (ts_ffi keeps ts_lua's context alive). Each transaction logs its handler
-- calls to TS_FFI_SANDBOX/transform.log as one line at eos:
--   <uri> calls=<n> sizes=<a,b,..> eos=<flags> id=<ts_ffi id>/<ts_lua id>
local transform = require "ts_ffi.transform"
local txn = require "ts_ffi.txn"

local function log(line)
  local f = io.open(os.getenv("TS_FFI_SANDBOX") .. "/transform.log", "a")
  f:write(line, "\n")
  f:close()
end

local function arg(name)
  return (ts.client_request.get_uri_args() or ""):match(name .. "=([^&]+)")
end

local function make_handler(uri, mode)
  local sizes, eoss = {}, {}
  return function(data, eos)
    sizes[#sizes + 1] = #data
    eoss[#eoss + 1] = eos and 1 or 0
    if mode == "fail" then error("deliberate failure") end
    if mode == "yield" then coroutine.yield() end
    if mode == "number" then return 42 end
    if eos then
      log(uri .. " calls=" .. #sizes .. " sizes=" .. table.concat(sizes, ",") .. " eos="
        .. table.concat(eoss, ",") .. " id=" .. tostring(txn.id()) .. "/" .. tostring(ts.http.id()))
    end
    if mode == "upper" then return data:upper() end
    if mode == "hold" then
      -- hold everything back and send it all at the end
      ts.ctx.held = (ts.ctx.held or "") .. data
      return eos and ts.ctx.held or nil
    end
    return data
  end
end

function do_remap()
  local uri = ts.client_request.get_uri()
  local mode = arg("mode")
  local min = tonumber(arg("min"))
  if arg("late") then
    -- too late once the response header is in: try from SEND_RESPONSE_HDR
    ts.hook(TS_LUA_HOOK_SEND_RESPONSE_HDR, function()
      local ok, err = transform.response(make_handler(uri, mode))
      ts.client_response.header["X-Late"] = tostring(ok) .. "," .. tostring(err)
    end)
    return 0
  end
  -- chains: extra identity transforms of ts_ffi's (with a min_chunk larger than the body)
  -- and of ts_lua's, after the logging one
  for _ = 1, tonumber(arg("chain") or "0") do
    transform.response(function(data) return data end, { min_chunk = 1000000 })
  end
  if arg("lua") then
    ts.hook(TS_LUA_RESPONSE_TRANSFORM, function(data, eos) return data, eos end)
  end
  if arg("request") then
    transform.request(make_handler(uri .. " request", mode), { min_chunk = min })
  else
    transform.response(make_handler(uri, mode), { min_chunk = min })
  end
  return 0
end
