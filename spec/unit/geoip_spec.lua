-- ts_ffi.geoip in plain LuaJIT: fixtures are written here (spec/support/mmdb.lua); the
-- legacy databases are Debian's geoip-database (installed by the Makefile).
local geoip = require "ts_ffi.geoip"
local mmdb = require "support.mmdb"

local LEGACY4, LEGACY6 = "/usr/share/GeoIP/GeoIP.dat", "/usr/share/GeoIP/GeoIPv6.dat"

local dir
local function path(name) return dir .. "/" .. name end
local function sh(cmd) assert(os.execute(cmd) == 0, cmd) end
local ats = require "support.ats" -- its file helpers only
local function read(p) return assert(ats.read(p)) end
local write = ats.write
local function err_of(f, ...)
  local ok, err = pcall(f, ...)
  assert(not ok, "expected an error")
  return err
end

setup(function()
  dir = io.popen("mktemp -d /tmp/ts_ffi_geoip_spec.XXXXXX"):read("*l")
  mmdb.write(path("country.mmdb"), { networks = mmdb.COUNTRY_NETWORKS })
  mmdb.write(path("country4.mmdb"), { ip_version = 4, networks = {
    { "81.2.69.0/24", { country = { iso_code = "GB" } } } } })
  mmdb.write(path("asn.mmdb"), { database_type = "Test-ASN", networks = {
    { "1.128.0.0/11", { autonomous_system_number = 1221,
      autonomous_system_organization = "Telstra Pty Ltd" } } } })
  mmdb.write(path("types.mmdb"), { networks = { { "192.0.2.0/24", {
    u16 = mmdb.typed("uint16", 65535), u64 = mmdb.typed("uint64", 2 ^ 53),
    big = mmdb.typed("uint128", "ffffffffffffffffffffffffffffffff"),
    neg = -5, dbl = 1.25, flt = mmdb.typed("float", 0.5), raw = mmdb.typed("bytes", "\0\1\2"),
    yes = true, no = false, list = { 1, "two", { three = 3 } }, empty = {},
  } } } })
end)

teardown(function()
  if dir then os.execute("rm -rf " .. dir) end
end)

describe("ts_ffi.geoip with MaxMind DB files", function()
  it("answers country codes for IPv4 and IPv6 addresses", function()
    local db = assert(geoip.open(path("country.mmdb")))
    assert.equal("GB", db:country("81.2.69.142"))
    assert.equal("US", db:country("216.160.83.57"))
    assert.equal("SE", db:country("89.160.20.113"))
    assert.equal("JP", db:country("2001:218::1"))
    assert.equal("GB", db:country("::ffff:81.2.69.1")) -- IPv4-mapped is IPv4
    assert.is_nil(db:country("214.1.1.1")) -- a record without a country
    assert.is_nil(db:country("10.0.0.1")) -- no record
    assert.is_nil(db:country("2001:db8::1"))
  end)

  it("returns the whole record as nested tables", function()
    local db = assert(geoip.open(path("country.mmdb")))
    local r = db:lookup("81.2.69.142")
    assert.equal("GB", r.country.iso_code)
    assert.equal("United Kingdom", r.country.names.en)
    assert.equal("EU", r.continent.code)
    assert.equal(51.5, r.location.latitude)
    assert.equal(12345, r.traits.asn)
    assert.is_false(r.traits.is_anycast)
    assert.same({ "a", "b" }, db:lookup("89.160.20.113").tags)
    assert.same({ registered_country = { iso_code = "US" } }, db:lookup("214.1.1.1"))
    assert.is_nil(db:lookup("10.0.0.1"))
  end)

  it("maps every MaxMind DB type to a Lua value", function()
    local r = assert(geoip.open(path("types.mmdb"))):lookup("192.0.2.1")
    assert.equal(65535, r.u16)
    assert.equal(2 ^ 53, r.u64)
    assert.equal("340282366920938463463374607431768211455", r.big)
    assert.equal(-5, r.neg)
    assert.equal(1.25, r.dbl)
    assert.equal(0.5, r.flt)
    assert.equal("\0\1\2", r.raw)
    assert.is_true(r.yes)
    assert.is_false(r.no)
    assert.same({ 1, "two", { three = 3 } }, r.list)
    assert.same({}, r.empty)
  end)

  it("answers nil for databases without country data", function()
    local db = assert(geoip.open(path("asn.mmdb")))
    assert.is_nil(db:country("1.128.0.1"))
    assert.equal(1221, db:lookup("1.128.0.1").autonomous_system_number)
    assert.equal("Test-ASN", db:info().database_type)
  end)

  it("answers nil for IPv6 addresses in an IPv4-only database", function()
    local db = assert(geoip.open(path("country4.mmdb")))
    assert.equal("GB", db:country("81.2.69.1"))
    assert.is_nil(db:country("2001:218::1"))
    assert.is_nil(db:lookup("2001:218::1"))
  end)

  it("describes the database", function()
    local info = assert(geoip.open(path("country.mmdb"))):info()
    assert.equal("mmdb", info.kind)
    assert.equal(path("country.mmdb"), info.path)
    assert.equal("ts_ffi-Test", info.database_type)
    assert.equal(6, info.ip_version)
    assert.equal(1700000000, info.build_epoch)
    assert.equal(#read(path("country.mmdb")), info.size)
  end)
end)

describe("ts_ffi.geoip with legacy GeoIP country databases", function()
  it("answers country codes from GeoIP.dat (IPv4)", function()
    local db = assert(geoip.open(LEGACY4))
    assert.equal("US", db:country("8.8.8.8"))
    assert.equal("US", db:country("::ffff:8.8.8.8"))
    assert.is_nil(db:country("127.0.0.1"))
    assert.is_nil(db:country("2001:4860:4860::8888")) -- an IPv4 database
    assert.equal("legacy", db:info().kind)
    assert.equal(4, db:info().ip_version)
  end)

  it("answers country codes from GeoIPv6.dat (IPv6, and IPv4 as mapped addresses)", function()
    local db = assert(geoip.open(LEGACY6))
    assert.equal("US", db:country("2001:4860:4860::8888"))
    assert.equal("US", db:country("8.8.8.8"))
    assert.is_nil(db:country("::1"))
    assert.equal(6, db:info().ip_version)
  end)

  it("returns a documented record", function()
    local db = assert(geoip.open(LEGACY4))
    assert.same({ country_code = "US", country_code3 = "USA", country_name = "United States",
      continent_code = "NA" }, db:lookup("8.8.8.8"))
    assert.is_nil(db:lookup("127.0.0.1"))
  end)

  it("tells the formats apart by content, not by name", function()
    sh("cp " .. LEGACY4 .. " " .. path("legacy.mmdb"))
    sh("cp " .. path("country.mmdb") .. " " .. path("maxmind.dat"))
    assert.equal("legacy", assert(geoip.open(path("legacy.mmdb"))):info().kind)
    assert.equal("mmdb", assert(geoip.open(path("maxmind.dat"))):info().kind)
  end)
end)

describe("ts_ffi.geoip.open on what is no database", function()
  local function refuses(p, pattern)
    local db, err = geoip.open(p)
    assert.is_nil(db)
    assert.equal("string", type(err))
    if pattern then assert.matches(pattern, err) end
  end

  it("returns nil, err for directories, FIFOs, devices and missing files, without blocking", function()
    refuses(dir, "is a directory")
    sh("mkfifo " .. path("fifo"))
    refuses(path("fifo"), "is a FIFO")
    sh("ln -s " .. path("fifo") .. " " .. path("link-to-fifo"))
    refuses(path("link-to-fifo"), "is a FIFO")
    refuses("/dev/zero", "character device")
    refuses("/dev/null", "character device")
    refuses(path("missing.mmdb"), "No such file")
    refuses("", "empty path")
  end)

  it("returns nil, err for empty, text, random and zero-filled files", function()
    write(path("empty"), "")
    refuses(path("empty"), "is empty")
    refuses("/etc/passwd", "not a MaxMind DB or legacy GeoIP country database")
    write(path("zeros"), ("\0"):rep(100000))
    refuses(path("zeros"))
    sh("head -c 65536 /dev/urandom > " .. path("random"))
    refuses(path("random"))
  end)

  it("returns nil, err for truncated and corrupt MaxMind DB files", function()
    local good = read(path("country.mmdb"))
    write(path("half.mmdb"), good:sub(1, math.floor(#good / 2)))
    refuses(path("half.mmdb"))
    write(path("nometa.mmdb"), good:sub(1, #good - 20))
    refuses(path("nometa.mmdb"))
    -- the marker alone, with garbage after it
    write(path("marker.mmdb"), "\171\205\239MaxMind.com" .. ("\255"):rep(64))
    refuses(path("marker.mmdb"), "MaxMind DB")
    -- a search tree whose records point past the data section
    local tree_bad = ("\255"):rep(6 * 10) .. good:sub(61)
    write(path("badtree.mmdb"), tree_bad)
    refuses(path("badtree.mmdb"), "MaxMind DB")
  end)

  it("returns nil, err for truncated legacy databases and other legacy editions", function()
    sh("head -c 1000000 " .. LEGACY4 .. " > " .. path("half.dat"))
    refuses(path("half.dat"), "not a MaxMind DB or legacy GeoIP country database")
    write(path("city.dat"), ("\0"):rep(600) .. "\255\255\255\2")
    refuses(path("city.dat"), "edition 2 is not a country database")
  end)

  it("raises for arguments that are not one path string", function()
    assert.matches("^ts_ffi%.geoip%.open: the path must be a string %(got nil%)", err_of(geoip.open, nil))
    assert.matches("^ts_ffi%.geoip%.open: the path must be a string %(got number%)", err_of(geoip.open, 1))
    assert.matches("^ts_ffi%.geoip%.open: takes one argument", err_of(geoip.open))
    assert.matches("^ts_ffi%.geoip%.open: takes one argument", err_of(geoip.open, "a", "b"))
  end)
end)

describe("ts_ffi.geoip lookups", function()
  it("raise errors naming the function for bad addresses", function()
    local db = assert(geoip.open(path("country.mmdb")))
    for _, bad in ipairs { "", "x", "8.8.8", "8.8.8.8 ", "256.1.1.1", "1.2.3.4/24", "::g", "8.8.8.8\0" } do
      assert.matches("^ts_ffi%.geoip%.country: bad address '", err_of(db.country, db, bad))
      assert.matches("^ts_ffi%.geoip%.lookup: bad address '", err_of(db.lookup, db, bad))
    end
    assert.matches("^ts_ffi%.geoip%.country: the address must be a string %(got number%)",
      err_of(db.country, db, 1))
    assert.matches("^ts_ffi%.geoip%.lookup: the address must be a string %(got nil%)",
      err_of(db.lookup, db, nil))
    assert.matches("^ts_ffi%.geoip%.country: takes one argument", err_of(db.country, db))
    assert.matches("^ts_ffi%.geoip%.country: call it as db:country", err_of(db.country, "8.8.8.8"))
    assert.matches("^ts_ffi%.geoip%.lookup: call it as db:lookup", err_of(db.lookup, {}, "8.8.8.8"))
    local legacy = assert(geoip.open(LEGACY4))
    assert.matches("^ts_ffi%.geoip%.country: bad address 'nope'", err_of(legacy.country, legacy, "nope"))
  end)
end)

describe("ts_ffi.geoip db objects", function()
  it("keep their native parts out of the script's reach", function()
    local db = assert(geoip.open(path("country.mmdb")))
    db.h, db.ud = 1, "x"
    assert.equal("GB", db:country("81.2.69.142"))
    assert.equal("GB", db:lookup("81.2.69.142").country.iso_code)
    assert.equal("ts_ffi.geoip db", getmetatable(db))
    local fake = setmetatable({}, { __index = getmetatable(geoip.open(path("country.mmdb"))) })
    assert.matches("call it as db:country", err_of(function() return geoip.open(path("country.mmdb")).country(fake, "1.2.3.4") end))
  end)
end)

describe("ts_ffi.geoip sharing", function()
  it("loads a file once per process and shares it", function()
    local a = assert(geoip.open(path("country.mmdb")))
    local b = assert(geoip.open(dir .. "/./country.mmdb")) -- same file, other spelling
    assert.equal(a:info().load_id, b:info().load_id)
    local seen
    for _, t in ipairs(geoip.loaded()) do
      if t.path == path("country.mmdb") then seen = t end
    end
    assert.equal("mmdb", seen.kind)
    assert.equal(a:info().load_id, seen.load_id)
    assert.is_true(seen.opens >= 2)
  end)

  it("loads a replaced file anew on the next open; open handles keep their copy", function()
    local p = path("replaced.mmdb")
    mmdb.write(p, { networks = { { "81.2.69.0/24", { country = { iso_code = "GB" } } } } })
    local old = assert(geoip.open(p))
    assert.equal("GB", old:country("81.2.69.1"))
    -- an update the usual way: write a new file, rename it over the old one
    mmdb.write(p .. ".new", { networks = { { "81.2.69.0/24", { country = { iso_code = "FR" } } } } })
    assert(os.rename(p .. ".new", p))
    local new = assert(geoip.open(p))
    assert.equal("FR", new:country("81.2.69.1"))
    assert.equal("GB", old:country("81.2.69.1"))
    assert.not_equal(old:info().load_id, new:info().load_id)
    -- an update in place (same inode) with garbage: loaded copies are untouched
    write(p, ("x"):rep(1000))
    assert.equal("FR", new:country("81.2.69.1"))
    assert.equal("GB", old:country("81.2.69.1"))
    assert.is_nil((geoip.open(p)))
    -- and the file removed
    os.remove(p)
    assert.equal("FR", new:country("81.2.69.1"))
    assert.is_nil((geoip.open(p)))
  end)

  it("closes one handle: it raises from then on; other handles keep working", function()
    local p = path("close.mmdb")
    mmdb.write(p, { networks = { { "81.2.69.0/24", { country = { iso_code = "GB" } } } } })
    local a, b = assert(geoip.open(p)), assert(geoip.open(p))
    assert.is_true(a:close())
    assert.is_false(a:close())
    assert.matches("^ts_ffi%.geoip%.country: database is closed", err_of(a.country, a, "81.2.69.1"))
    assert.matches("^ts_ffi%.geoip%.lookup: database is closed", err_of(a.lookup, a, "81.2.69.1"))
    assert.matches("^ts_ffi%.geoip%.info: database is closed", err_of(a.info, a))
    assert.equal("GB", b:country("81.2.69.1"))
    local function opens()
      for _, t in ipairs(geoip.loaded()) do
        if t.path == p then return t.opens end
      end
      return 0
    end
    assert.equal(1, opens())
    local load_id = b:info().load_id
    local c = assert(geoip.open(p)) -- still loaded: shared, not reloaded
    assert.equal(load_id, c:info().load_id)
    b:close()
    c:close()
    assert.equal(0, opens()) -- every open closed: unloaded
    local d = assert(geoip.open(p))
    assert.not_equal(load_id, d:info().load_id)
    assert.equal("ts_ffi.geoip db: " .. p .. " (mmdb)", tostring(d))
    d:close()
    assert.equal("ts_ffi.geoip db: closed", tostring(d))
  end)

  it("keeps a database loaded when its handles are collected without close", function()
    local p = path("gc.mmdb")
    mmdb.write(p, { networks = { { "81.2.69.0/24", { country = { iso_code = "GB" } } } } })
    local load_id = assert(geoip.open(p)):info().load_id
    for _ = 1, 3 do collectgarbage() end
    assert.equal(load_id, assert(geoip.open(p)):info().load_id)
  end)
end)
