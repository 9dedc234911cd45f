-- ts_ffi.info: the running traffic_server's version and directories.
-- Valid anywhere inside traffic_server (script load time, __init__, every hook).

local base = require "ts_ffi.base"
local native, check, no_args = base.native, base.check, base.no_args

local _M = {}

function _M.version(...)
  no_args("ts_ffi.info.version", ...)
  return (check("ts_ffi.info.version", "TSTrafficServerVersionGet", native.info_version()))
end

function _M.version_number(...)
  no_args("ts_ffi.info.version_number", ...)
  return check("ts_ffi.info.version_number", "TSTrafficServerVersionGetMajor",
    native.info_version_number())
end

for _, d in ipairs { { "install_dir", "TSInstallDirGet" }, { "config_dir", "TSConfigDirGet" },
                     { "runtime_dir", "TSRuntimeDirGet" }, { "plugin_dir", "TSPluginDirGet" } } do
  local name, tsfn = d[1], d[2]
  local fname, get = "ts_ffi.info." .. name, native["info_" .. name]
  _M[name] = function(...)
    no_args(fname, ...)
    return (check(fname, tsfn, get()))
  end
end

return _M
