-- Choosing the outgoing address: requests under /premium/ leave for the origin from
-- 127.0.0.2, everything else from the default address. On a real host use addresses the
-- host owns (one per uplink, per customer, per reputation pool).
--
-- ATS keeps the choice with the client connection, so each request decides for itself:
-- set it, or go back to the default with clear_outgoing_addr().
local tree = os.getenv("TS_FFI_TREE") or "/usr/local"
ts.add_package_path(tree .. "/share/lua/5.1/?.lua")
ts.add_package_cpath(tree .. "/lib/lua/5.1/?.so")

local txn = require "ts_ffi.txn"

local PREMIUM_SOURCE = "127.0.0.2"

function do_remap()
  if ts.client_request.get_uri():find("^/premium/") then
    txn.set_outgoing_addr(PREMIUM_SOURCE)
  else
    txn.clear_outgoing_addr()
  end
  return 0
end
