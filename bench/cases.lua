-- The hot functions `make bench` measures, one line each: name (module.function of ts_ffi;
-- skipped while that function does not exist), then Lua statements run in the timed loop that
-- set `last`: ts_ffi's call, ts_lua's built-in (false: none), and the same through raw LuaJIT
-- FFI with the TSHttpTxn read once before the loop. `where`: the ts_lua context the loop runs
-- in ("hook": a READ_RESPONSE_HDR ts.hook handler, the default; "remap": do_remap, where
-- ts_lua answers the remap URLs). Locals the statements can use: txn, ssn (and any ts_ffi
-- module by its short name), ts, C (ffi.C), txnp, bufp (client request), ibuf (int[1]),
-- lbuf (TSMLoc[1]), sbuf (char[64]), tonumber, ffi_string, raw_next_hop; for tcpinfo:
-- ffi_new, tcpinfo_t (a hand-declared struct tcp_info), tcpinfo_full_t (every field declared),
-- raw_tcp_table (a table of a tcpinfo_full_t's fields), slen (socklen_t[1]); for geoip: db
-- (ts_ffi.geoip.open of the bench's .mmdb fixture), ip, and libmaxminddb through FFI: mmlib,
-- mmdb (MMDB_s *, opened once), mpath ({"country","iso_code",NULL}), mres (entry data),
-- merr (int[2]). `fn`: the ts_ffi function whose presence says the case exists.
return {
  { "txn.id", "last = txn.id()", "last = ts.http.id()",
    "last = tonumber(C.TSHttpTxnIdGet(txnp))" },
  { "txn.client_fd", "last = txn.client_fd()", "last = ts.http.get_client_fd()",
    "C.TSHttpTxnClientFdGet(txnp, ibuf) last = ibuf[0]" },
  { "ssn.id", "last = ssn.id()", "last = ts.http.ssn_id()",
    "last = tonumber(C.TSHttpSsnIdGet(C.TSHttpTxnSsnGet(txnp)))" },
  { "txn.server_fd", "last = txn.server_fd()", "last = ts.http.get_server_fd()",
    "C.TSHttpTxnServerFdGet(txnp, ibuf) last = ibuf[0]" },
  { "txn.is_aborted", "last = txn.is_aborted()", "last = ts.http.is_aborted()",
    "last = C.TSHttpTxnAborted(txnp) == 0" },
  { "txn.next_hop_addr", "last = txn.next_hop_addr()",
    "last = ts.server_request.server_addr.get_nexthop_addr()",
    "last = raw_next_hop(C.TSHttpTxnNextHopAddrGet(txnp))" },
  { "txn.remap_from_url", "last = txn.remap_from_url()", "last = ts.remap.get_from_url()",
    "C.TSRemapFromUrlGet(txnp, lbuf) local p = C.TSUrlStringGet(bufp, lbuf[0], ibuf) "
      .. "last = ffi_string(p, ibuf[0]) C._TSfree(p)", where = "remap" },
  { "txn.remap_to_url", "last = txn.remap_to_url()", "last = ts.remap.get_to_url()",
    "C.TSRemapToUrlGet(txnp, lbuf) local p = C.TSUrlStringGet(bufp, lbuf[0], ibuf) "
      .. "last = ffi_string(p, ibuf[0]) C._TSfree(p)", where = "remap" },
  -- No ts_lua equivalent: compared with the same through raw FFI. The raw tcpinfo code makes
  -- a new struct per call, as a script would; ts_ffi.tcpinfo.client() returns a table of
  -- every field; both loops then read rtt. tcpinfo.client("rtt") returns that field alone.
  { "tcpinfo.client", "last = tcpinfo.client().rtt", false,
    "C.TSHttpTxnClientFdGet(txnp, ibuf) local ti = ffi_new(tcpinfo_t) slen[0] = 232 "
      .. "C.getsockopt(ibuf[0], 6, 11, ti, slen) last = ti.rtt" }, -- IPPROTO_TCP, TCP_INFO
  { "tcpinfo.client.rtt", 'last = tcpinfo.client("rtt")', false,
    "C.TSHttpTxnClientFdGet(txnp, ibuf) local ti = ffi_new(tcpinfo_t) slen[0] = 232 "
      .. "C.getsockopt(ibuf[0], 6, 11, ti, slen) last = ti.rtt", fn = "client" },
  -- The same work as tcpinfo.client() through raw FFI: getsockopt into a hand-declared
  -- struct with every field of Linux's struct tcp_info (made per call), then a table of Lua
  -- numbers of every field (raw_tcp_table in bench/micro.lua, as a script would write it).
  { "tcpinfo.client.table", "last = tcpinfo.client().rtt", false,
    "C.TSHttpTxnClientFdGet(txnp, ibuf) local ti = ffi_new(tcpinfo_full_t) slen[0] = 232 "
      .. "C.getsockopt(ibuf[0], 6, 11, ti, slen) last = raw_tcp_table(ti, slen[0]).rtt",
    fn = "client" },
  { "geoip.country", "last = db:country(ip)", false,
    "local r = mmlib.MMDB_lookup_string(mmdb, ip, merr, merr + 1) "
      .. "if r.found_entry and mmlib.MMDB_aget_value(r.entry, mres, mpath) == 0 "
      .. "and mres.has_data then last = ffi_string(mres.utf8_string, mres.data_size) end",
    fn = "open" },
}
