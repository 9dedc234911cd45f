-- End-to-end bench script, ts_lua built-in version of bench/e2e_ffi.lua.
local function send_response()
  ts.client_response.header["X-Ids"] = ts.http.id() .. "/" .. ts.http.ssn_id() .. "/"
    .. ts.http.get_client_fd()
end

function do_remap()
  local _ = ts.http.id() + ts.http.ssn_id() + ts.http.get_client_fd()
  ts.hook(TS_LUA_HOOK_SEND_RESPONSE_HDR, send_response)
  return 0
end
