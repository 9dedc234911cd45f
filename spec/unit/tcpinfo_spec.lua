local double = require "support.double"
local tcpinfo = require "ts_ffi.tcpinfo"
local socket = require "socket"
local ffi = require "ffi"

local tcp_pair = require "support.tcp_pair"

-- Fields every supported kernel fills, and the later ones Debian 12's kernel has.
local FIELDS = { "state", "ca_state", "retransmits", "probes", "backoff", "options",
  "snd_wscale", "rcv_wscale", "rto", "ato", "snd_mss", "rcv_mss", "unacked", "sacked", "lost",
  "retrans", "fackets", "last_data_sent", "last_ack_sent", "last_data_recv", "last_ack_recv",
  "pmtu", "rcv_ssthresh", "rtt", "rttvar", "snd_ssthresh", "snd_cwnd", "advmss", "reordering",
  "rcv_rtt", "rcv_space", "total_retrans", "pacing_rate", "max_pacing_rate", "bytes_acked",
  "bytes_received", "segs_out", "segs_in", "notsent_bytes", "min_rtt", "data_segs_in",
  "data_segs_out", "delivery_rate", "busy_time", "rwnd_limited", "sndbuf_limited", "delivered",
  "delivered_ce", "bytes_sent", "bytes_retrans", "dsack_dups", "reord_seen", "rcv_ooopack",
  "snd_wnd", "delivery_rate_app_limited", "fastopen_client_fail" }

-- A hand-written getsockopt(TCP_INFO), to compare with (the kernel's own layout).
ffi.cdef [[
struct ts_ffi_spec_tcp_info { uint8_t b[8]; uint32_t rto, ato, snd_mss, rcv_mss, unacked, sacked,
  lost, retrans, fackets, last_data_sent, last_ack_sent, last_data_recv, last_ack_recv, pmtu,
  rcv_ssthresh, rtt, rttvar, snd_ssthresh, snd_cwnd, advmss; };
int getsockopt(int fd, int level, int name, void *val, unsigned int *len);
]]
local function raw(fd)
  local t = ffi.new("struct ts_ffi_spec_tcp_info")
  local len = ffi.new("unsigned int[1]", ffi.sizeof(t))
  assert(ffi.C.getsockopt(fd, 6, 11, t, len) == 0)
  return t
end

describe("ts_ffi.tcpinfo", function()
  local c, a
  before_each(function() c, a = tcp_pair() end)
  after_each(function() c:close(); a:close() end)

  describe("client()", function()
    it("is the tcp_info of the client connection's socket", function()
      local thread = double.new_txn { client_fd = c:getfd() }
      local ok, t = double.run(thread, tcpinfo.client)
      assert.is_true(ok, t)
      assert.equal("table", type(t))
      for _, k in ipairs(FIELDS) do
        assert.equal("number", type(t[k]), k)
      end
      assert.equal(1, t.state) -- TCP_ESTABLISHED
      assert.is_true(t.rtt > 0)
      assert.is_true(t.rto >= 200000) -- µs: Linux's minimum RTO is 200 ms
      assert.is_true(t.data_segs_out >= 1)
      assert.is_true(t.data_segs_in >= 1)
      local r = raw(c:getfd())
      assert.equal(r.pmtu, t.pmtu)
      assert.equal(r.advmss, t.advmss)
      assert.equal(r.snd_mss, t.snd_mss)
      assert.equal(r.rcv_mss, t.rcv_mss)
    end)

    it("returns a new table on every call", function()
      local thread = double.new_txn { client_fd = c:getfd() }
      local ok, t1, t2 = double.run(thread, function() return tcpinfo.client(), tcpinfo.client() end)
      assert.is_true(ok)
      assert.not_equal(t1, t2)
      assert.equal(t1.pmtu, t2.pmtu)
    end)

    it("returns nil, err once the client connection is gone", function()
      local thread, ctx = double.new_txn { client_fd = c:getfd() }
      double.set_client_fd(ctx, -1)
      assert.same({ true, nil, "client connection is gone" }, { double.run(thread, tcpinfo.client) })
    end)

    it("returns nil, err when the fd is no TCP socket or is closed", function()
      local u = socket.udp()
      assert(u:setpeername("127.0.0.1", 9))
      local ok, t, err = double.run(double.new_txn { client_fd = u:getfd() }, tcpinfo.client)
      u:close()
      assert.is_true(ok)
      assert.is_nil(t)
      assert.matches("^getsockopt%(TCP_INFO%): ", err)
      local fd = c:getfd()
      c:close()
      ok, t, err = double.run(double.new_txn { client_fd = fd }, tcpinfo.client)
      assert.same({ true, nil, "getsockopt(TCP_INFO): connection is gone (EBADF)" }, { ok, t, err })
    end)

    it("raises without a transaction, and with arguments", function()
      assert.matches("^ts_ffi%.tcpinfo%.client: no transaction in this context",
        double.error_of(tcpinfo.client))
      local thread = double.new_txn { client_fd = c:getfd() }
      local _, err = double.run(thread, function() return select(2, pcall(tcpinfo.client, 1)) end)
      assert.matches("^ts_ffi%.tcpinfo%.client: unknown field 1 ", err)
      _, err = double.run(thread, function() return select(2, pcall(tcpinfo.client, "rtt", 1)) end)
      assert.matches("^ts_ffi%.tcpinfo%.client: takes no arguments or one field name %(got 2%)", err)
      for _, bad in ipairs { "tcpi_rtt", "RTT", "", "wscale", "rest" } do
        _, err = double.run(thread, function() return select(2, pcall(tcpinfo.client, bad)) end)
        assert.matches("^ts_ffi%.tcpinfo%.client: unknown field \"", err)
      end
    end)

    it("client(field) is that field of the table, without the table", function()
      local thread = double.new_txn { client_fd = c:getfd() }
      local ok, t = double.run(thread, tcpinfo.client)
      assert.is_true(ok, t)
      for _, k in ipairs(FIELDS) do
        local ok2, v = double.run(thread, tcpinfo.client, k)
        assert.is_true(ok2, v)
        assert.equal("number", type(v), k)
      end
      for _, k in ipairs { "state", "snd_mss", "rcv_mss", "pmtu", "advmss", "snd_wscale",
                           "rcv_wscale", "options", "bytes_received", "total_retrans" } do
        assert.equal(t[k], select(2, double.run(thread, tcpinfo.client, k)), k)
      end
      local r = raw(c:getfd())
      assert.equal(r.rtt > 0, select(2, double.run(thread, tcpinfo.client, "rtt")) > 0)
    end)

    it("client(field) returns nil, err for the same conditions", function()
      local thread, ctx = double.new_txn { client_fd = c:getfd() }
      double.set_client_fd(ctx, -1)
      assert.same({ true, nil, "client connection is gone" },
        { double.run(thread, tcpinfo.client, "rtt") })
      local u = assert(socket.udp())
      assert(u:setpeername("127.0.0.1", 9))
      double.set_client_fd(ctx, u:getfd())
      local ok, v, err = double.run(thread, tcpinfo.client, "rtt")
      u:close()
      assert.same({ true, nil }, { ok, v })
      assert.matches("^getsockopt%(TCP_INFO%): ", err)
    end)

    it("raises in a released transaction's context", function()
      local thread, ctx = double.new_txn { client_fd = c:getfd() }
      assert.is_true((double.run(thread, tcpinfo.client)))
      double.release(ctx)
      local ok, err = double.run(thread, tcpinfo.client)
      assert.is_false(ok)
      assert.matches("^ts_ffi%.tcpinfo%.client: no transaction in this context", err)
    end)
  end)

  describe("on older kernels", function()
    -- The table builder (an upvalue of the module's query function), given fewer bytes, as
    -- older kernels fill: the fields they lack are absent.
    local function upvalue(f, name)
      for i = 1, 50 do
        local n, v = debug.getupvalue(f, i)
        if n == name then return v end
        if not n then break end
      end
    end
    local to_table = upvalue(upvalue(tcpinfo.client, "query"), "to_table")
    local o = ffi.new("struct ts_ffi_tcp_info", { state = 1, rtt = 7, total_retrans = 2,
      pacing_rate = 9, segs_out = 3, min_rtt = 4, data_segs_out = 5, delivery_rate = 6,
      delivered = 8, bytes_sent = 10, dsack_dups = 11, snd_wnd = 12 })

    for _, case in ipairs {
      { 104, "total_retrans", "pacing_rate" }, { 144, "segs_out", "min_rtt" },
      { 160, "data_segs_out", "delivery_rate" }, { 200, "delivered", "bytes_sent" },
      { 216, "bytes_sent", "dsack_dups" }, { 224, "dsack_dups", "snd_wnd" },
    } do
      it("fills " .. case[1] .. " bytes: " .. case[2] .. " but no " .. case[3], function()
        local t = to_table(o, case[1])
        assert.equal(1, t.state)
        assert.equal(7, t.rtt)
        assert.equal("number", type(t[case[2]]))
        assert.is_nil(t[case[3]])
        assert.is_nil(t.snd_wnd)
      end)
    end

    it("a field alone is there exactly when the table has it", function()
      local needs = upvalue(upvalue(tcpinfo.client, "query_field"), "NEEDS")
      for _, n in ipairs { 104, 144, 160, 200, 216, 224, 232 } do
        local t = to_table(o, n)
        for _, k in ipairs(FIELDS) do
          assert.equal(t[k] ~= nil, needs[k] <= n, k .. " at " .. n)
        end
      end
    end)

    it("fills everything from 232 bytes on", function()
      local t = to_table(o, 232)
      assert.equal(12, t.snd_wnd)
      assert.equal(9, t.pacing_rate)
      local n = 0
      for _ in pairs(t) do n = n + 1 end
      assert.equal(#FIELDS, n)
    end)
  end)

  describe("server()", function()
    it("is the tcp_info of the origin connection's socket", function()
      local thread = double.new_txn { client_fd = c:getfd(), server_fd = a:getfd() }
      local ok, t = double.run(thread, tcpinfo.server)
      assert.is_true(ok, t)
      assert.equal(1, t.state)
      assert.equal(raw(a:getfd()).advmss, t.advmss)
    end)

    it("returns nil, err when there is no origin connection (yet, or any more)", function()
      local thread, ctx = double.new_txn { client_fd = c:getfd() }
      assert.same({ true, nil, "no origin connection" }, { double.run(thread, tcpinfo.server) })
      double.set_server_fd(ctx, a:getfd())
      assert.equal(1, select(2, double.run(thread, tcpinfo.server)).state)
      double.set_server_fd(ctx, -1)
      assert.same({ true, nil, "no origin connection" }, { double.run(thread, tcpinfo.server) })
    end)

    it("raises without a transaction, and with arguments", function()
      assert.matches("^ts_ffi%.tcpinfo%.server: no transaction in this context",
        double.error_of(tcpinfo.server))
      local thread = double.new_txn {}
      local _, err = double.run(thread, function() return select(2, pcall(tcpinfo.server, nil)) end)
      assert.matches("^ts_ffi%.tcpinfo%.server: unknown field nil ", err)
      assert.same({ true, nil, "no origin connection" }, { double.run(thread, tcpinfo.server, "rtt") })
    end)
  end)
end)
