-- luarocks make --tree DIR rockspec/ts_ffi-scm-1.rockspec   (from the repository root)
rockspec_format = "3.0"
package = "ts_ffi"
version = "scm-1"
source = {
  url = "git+file:///dev/null/ts_ffi", -- built from a checkout with `luarocks make`
}
description = {
  summary = "Safe, fast access to the Apache Traffic Server C API for ATS Lua (tslua.so) scripts",
  detailed = [[
    A LuaJIT native module written in Rust plus Lua wrappers: the reach of LuaJIT FFI on the
    ATS C API without its crashes. Runs inside traffic_server's Lua plugin (ATS 9.2.x).
  ]],
  license = "Apache-2.0",
}
supported_platforms = { "linux" }
dependencies = {}
build = {
  type = "command",
  -- cargo names the library libts_ffi.so; Lua looks for ts_ffi.so (luaopen_ts_ffi).
  build_command = "cargo build --release --locked --quiet && cp target/release/libts_ffi.so target/release/ts_ffi.so",
  install = {
    lib = {
      ts_ffi = "target/release/ts_ffi.so",
    },
    lua = {
      ["ts_ffi.base"] = "lua/ts_ffi/base.lua",
      ["ts_ffi.info"] = "lua/ts_ffi/info.lua",
      ["ts_ffi.txn"] = "lua/ts_ffi/txn.lua",
      ["ts_ffi.ssn"] = "lua/ts_ffi/ssn.lua",
      ["ts_ffi.transform"] = "lua/ts_ffi/transform.lua",
      ["ts_ffi.dns"] = "lua/ts_ffi/dns.lua",
      ["ts_ffi.tcpinfo"] = "lua/ts_ffi/tcpinfo.lua",
      ["ts_ffi.geoip"] = "lua/ts_ffi/geoip.lua",
      ["ts_ffi.waf"] = "lua/ts_ffi/waf.lua",
      -- Not a module: the WAF's base configuration, installed as ts_ffi/modsecurity.conf.
      ["ts_ffi.modsecurity_conf"] = "conf/modsecurity.conf",
    },
  },
}
