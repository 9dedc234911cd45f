-- A tiny MaxMind DB writer for test fixtures (format: MaxMind DB File Format Specification
-- 2.0): a search tree with 24-bit records, an unshared data section, and the metadata.
--
--   local mmdb = require "support.mmdb"
--   mmdb.write(path, {
--     ip_version = 6,                      -- 4 or 6 (IPv4 networks then live at ::/96)
--     database_type = "Test-Country",
--     networks = { { "81.2.69.0/24", { country = { iso_code = "GB" } } }, ... },
--   })
--
-- Values: strings; integers 0..2^32-1 as uint32, other integers as int32, other numbers as
-- double; booleans; tables with [1] as arrays, other tables as maps;
-- mmdb.typed("uint16"|"uint64"|"uint128"|"float"|"bytes", v) for the other types.
local ffi = require "ffi"
local bit = require "bit"
local char, floor = string.char, math.floor

local M = {}

local TYPES = { pointer = 1, string = 2, double = 3, bytes = 4, uint16 = 5, uint32 = 6, map = 7,
  int32 = 8, uint64 = 9, uint128 = 10, array = 11, boolean = 14, float = 15 }

function M.typed(t, v)
  return { __mmdb_type = t, value = v }
end

local function control(t, size)
  local tn = TYPES[t]
  local first = tn <= 7 and tn or 0
  local extra
  if size < 29 then
    extra = ""
  elseif size < 285 then
    extra, size = char(size - 29), 29
  elseif size < 65821 then
    local s = size - 285
    extra, size = char(floor(s / 256), s % 256), 30
  else
    local s = size - 65821
    extra, size = char(floor(s / 65536) % 256, floor(s / 256) % 256, s % 256), 31
  end
  local s = char(first * 32 + size)
  if tn > 7 then s = s .. char(tn - 7) end
  return s .. extra
end

-- Big-endian bytes of a non-negative integer, minimal length (0 is no bytes).
local function uint_bytes(n)
  local b = {}
  while n > 0 do
    table.insert(b, 1, char(n % 256))
    n = floor(n / 256)
  end
  return table.concat(b)
end

local function float_bytes(ctype, v)
  local n = ffi.sizeof(ctype)
  local x = ffi.new(ctype .. "[1]", v)
  local p = ffi.cast("const uint8_t *", x)
  local b = {}
  for i = n - 1, 0, -1 do b[#b + 1] = char(p[i]) end -- little-endian host → big-endian
  return table.concat(b)
end

local encode

local function encode_typed(t, v)
  if t == "string" or t == "bytes" then return control(t, #v) .. v end
  if t == "uint16" or t == "uint32" or t == "uint64" then
    local b = uint_bytes(v)
    return control(t, #b) .. b
  end
  if t == "uint128" then -- v: a hex string of up to 32 digits
    local b = {}
    v = ("0"):rep(32 - #v) .. v
    for i = 1, 32, 2 do b[#b + 1] = char(tonumber(v:sub(i, i + 1), 16)) end
    local s = table.concat(b):gsub("^%z+", "")
    return control(t, #s) .. s
  end
  if t == "int32" then
    local u = v < 0 and v + 4294967296 or v
    return control(t, 4) .. char(floor(u / 16777216) % 256, floor(u / 65536) % 256,
      floor(u / 256) % 256, u % 256)
  end
  if t == "double" then return control(t, 8) .. float_bytes("double", v) end
  if t == "float" then return control(t, 4) .. float_bytes("float", v) end
  if t == "boolean" then return control(t, v and 1 or 0) end
  error("unknown type " .. tostring(t))
end

encode = function(v)
  local tv = type(v)
  if tv == "string" then return encode_typed("string", v) end
  if tv == "boolean" then return encode_typed("boolean", v) end
  if tv == "number" then
    if v == floor(v) and v >= 0 and v < 4294967296 then return encode_typed("uint32", v) end
    if v == floor(v) and v >= -2147483648 and v < 0 then return encode_typed("int32", v) end
    return encode_typed("double", v)
  end
  if tv == "table" then
    if v.__mmdb_type then return encode_typed(v.__mmdb_type, v.value) end
    if v[1] ~= nil then
      local parts = { control("array", #v) }
      for _, x in ipairs(v) do parts[#parts + 1] = encode(x) end
      return table.concat(parts)
    end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys)
    local parts = { control("map", #keys) }
    for _, k in ipairs(keys) do
      parts[#parts + 1] = encode_typed("string", k)
      parts[#parts + 1] = encode(v[k])
    end
    return table.concat(parts)
  end
  error("cannot encode " .. tv)
end
M.encode = encode

-- An address as a list of bits (most significant first).
local function ip_bits(text)
  local bits = {}
  local a, b, c, d = text:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if a then
    for _, o in ipairs { a, b, c, d } do
      o = tonumber(o)
      for i = 7, 0, -1 do bits[#bits + 1] = bit.band(bit.rshift(o, i), 1) end
    end
    return bits, 4
  end
  local head, tail = text:match("^(.-)::(.*)$")
  local groups = {}
  local function split(s)
    local t = {}
    for g in s:gmatch("[^:]+") do t[#t + 1] = tonumber(g, 16) end
    return t
  end
  if head then
    local h, t = split(head), split(tail)
    for _, g in ipairs(h) do groups[#groups + 1] = g end
    for _ = 1, 8 - #h - #t do groups[#groups + 1] = 0 end
    for _, g in ipairs(t) do groups[#groups + 1] = g end
  else
    groups = split(text)
  end
  assert(#groups == 8, "bad address " .. text)
  for _, g in ipairs(groups) do
    for i = 15, 0, -1 do bits[#bits + 1] = bit.band(bit.rshift(g, i), 1) end
  end
  return bits, 6
end

-- The file's bytes.
function M.build(opts)
  local ip_version = opts.ip_version or 6
  local depth = ip_version == 6 and 128 or 32
  local root = {}
  for _, net in ipairs(opts.networks or {}) do
    local addr, len = net[1]:match("^(.-)/(%d+)$")
    len = tonumber(len)
    local bits, v = ip_bits(addr)
    if v == 4 and ip_version == 6 then -- IPv4 lives at ::/96
      local b = {}
      for i = 1, 96 do b[i] = 0 end
      for i = 1, 32 do b[96 + i] = bits[i] end
      bits, len = b, len + 96
    end
    assert(#bits == depth, "address family does not fit the tree: " .. net[1])
    local node = root
    for i = 1, len - 1 do
      local k = bits[i]
      if type(node[k]) ~= "table" or node[k].leaf then node[k] = {} end
      node = node[k]
    end
    node[bits[len]] = { leaf = true, data = net[2] }
  end

  -- number the nodes breadth-first
  local nodes, index = { root }, { [root] = 0 }
  local i = 1
  while i <= #nodes do
    for _, k in ipairs { 0, 1 } do
      local c = nodes[i][k]
      if c and not c.leaf then
        nodes[#nodes + 1] = c
        index[c] = #nodes - 1
      end
    end
    i = i + 1
  end
  local node_count = #nodes

  -- the data section: each record once
  local data, offsets, size = {}, {}, 0
  local function data_offset(leaf)
    if not offsets[leaf.data] then
      local bytes = encode(leaf.data)
      offsets[leaf.data] = size
      data[#data + 1] = bytes
      size = size + #bytes
    end
    return offsets[leaf.data]
  end

  local tree = {}
  local function record(c)
    if not c then return node_count end
    if c.leaf then return node_count + 16 + data_offset(c) end
    return index[c]
  end
  for _, n in ipairs(nodes) do
    for _, k in ipairs { 0, 1 } do
      local r = record(n[k])
      assert(r < 16777216, "tree too large for 24-bit records")
      tree[#tree + 1] = char(floor(r / 65536) % 256, floor(r / 256) % 256, r % 256)
    end
  end

  local metadata = opts.metadata or {
    node_count = M.typed("uint32", node_count),
    record_size = M.typed("uint16", 24),
    ip_version = M.typed("uint16", ip_version),
    database_type = opts.database_type or "ts_ffi-Test",
    languages = { "en" },
    binary_format_major_version = M.typed("uint16", 2),
    binary_format_minor_version = M.typed("uint16", 0),
    build_epoch = M.typed("uint64", opts.build_epoch or 1700000000),
    description = { en = opts.description or "ts_ffi test database" },
  }
  return table.concat(tree) .. ("\0"):rep(16) .. table.concat(data)
    .. "\171\205\239MaxMind.com" .. encode(metadata)
end

function M.write(path, opts)
  local f = assert(io.open(path, "wb"))
  f:write(type(opts) == "string" and opts or M.build(opts))
  f:close()
  return path
end

-- A fixture with known answers, used by the unit and integration specs.
M.COUNTRY_NETWORKS = {
  { "81.2.69.0/24", { country = { iso_code = "GB", names = { en = "United Kingdom" } },
    continent = { code = "EU" }, location = { latitude = 51.5, longitude = -0.13 },
    traits = { is_anycast = false, asn = 12345 } } },
  { "216.160.83.0/24", { country = { iso_code = "US", names = { en = "United States" } } } },
  { "89.160.20.112/28", { country = { iso_code = "SE" }, tags = { "a", "b" } } },
  { "2001:218::/32", { country = { iso_code = "JP" } } },
  { "214.1.1.0/24", { registered_country = { iso_code = "US" } } }, -- no country
}

return M
