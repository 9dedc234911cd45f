-- ts_ffi.waf inside a real traffic_server with Debian's OWASP CRS (modsecurity-crs 3.3.4):
-- attacks in the query, headers and request bodies (urlencoded, JSON, multipart, chunked) are
-- denied, the request body limit answers 413, a clean corpus passes, the talk's custom rule
-- works, redirects and response-phase denials, rule messages in the audit log, the fail
-- policy, concurrency, and protect() from a global hook.
local ats = require "support.ats"

local S = ats.root .. "/spec/integration/scripts/"

local read = ats.read

-- Waits (bounded) for `pattern` in the sandbox's log `name`.
local function log_has(sb, name, pattern)
  for _ = 1, 150 do
    if sb:log(name):find(pattern) then return true end
    os.execute("sleep 0.1")
  end
  return false
end

-- ATS flushes text logs every 5 s by default; 1 s keeps the log checks short.
local FAST_LOG = { "CONFIG proxy.config.log.max_secs_per_buffer INT 1",
  -- ATS's request buffer bound (2048 by default) must cover request_body_limit.
  "CONFIG proxy.config.http.post_copy_size INT 2097152" }

local BROWSER = "-H 'User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Firefox/115.0'"
  .. " -H 'Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8'"
  .. " -H 'Accept-Language: en-US,en;q=0.5' -H 'Accept-Encoding: gzip, deflate'"

-- POSTs `body` (from a file: any bytes) to `host`'s /echo with Content-Type `ctype`;
-- `chunked`: sent with Transfer-Encoding: chunked.
local function post_to(sb, host, ctype, body, chunked)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(body)
  f:close()
  local res = sb:get(host, "/echo", { curl = BROWSER .. " -X POST -H 'Content-Type: " .. ctype
    .. "' -H 'Expect:' --data-binary @" .. path
    .. (chunked and " -H 'Transfer-Encoding: chunked'" or "") })
  os.remove(path)
  return res
end

local FORM = "application/x-www-form-urlencoded"

describe("ts_ffi.waf inside traffic_server with the OWASP CRS", function()
  local sb

  setup(function()
    sb = ats.start {
      remap = { ["waf.test"] = S .. "waf.lua", ["plain.test"] = {},
                ["small.test"] = { S .. "waf.lua", "limit=2048" },
                ["nobody.test"] = { S .. "waf.lua", "nobody" },
                ["rlimit.test"] = { S .. "waf.lua", "rlimit=4096" },
                ["noresponse.test"] = { S .. "waf.lua", "noresponse" } },
      records = FAST_LOG,
      start_timeout = 30,
    }
  end)

  teardown(function()
    if sb then sb:stop() end
  end)

  local function get(path, curl)
    return sb:get("waf.test", path, { curl = BROWSER .. " " .. (curl or "") })
  end

  it("loads the rule set once for every Lua VM (one shared engine)", function()
    local ids, lines = {}, 0
    for id, rules in (read(sb.dir .. "/waf_engines.log") or ""):gmatch("(%d+) (%d+)\n") do
      ids[id] = tonumber(rules)
      lines = lines + 1
    end
    assert.is_true(lines >= 2, "script loaded in " .. lines .. " VMs")
    local n = 0
    for _, rules in pairs(ids) do
      n = n + 1
      assert.is_true(rules > 800, "CRS rules loaded: " .. rules)
    end
    assert.equal(1, n)
  end)

  describe("clean requests pass (no false positives)", function()
    local corpus = {
      { "/" },
      { "/index.html" },
      { "/images/logo.png", "-H 'Accept: image/avif,image/webp,*/*'" },
      { "/search?q=hello+world&lang=en" },
      { "/api/v1/items?page=2&sort=name&order=asc", "-H 'Accept: application/json'" },
      { "/blog/2024/05/a-post-about-caching.html", "-H 'Referer: http://waf.test/blog/'" },
      { "/account", "-H 'Cookie: session=8f14e45fceea167a5a36dedd4bea2543; theme=dark'" },
      { "/static/app.min.js?v=3.2.1", "-H 'If-None-Match: \"abc123\"'" },
      { "/products?category=shoes&size=42&color=dark%20blue" },
      { "/testparam-in-path?other=1" },
    }
    for _, case in ipairs(corpus) do
      it(case[1], function()
        local res = get(case[1], case[2])
        assert.equal(200, res.status, res.body)
        assert.equal("origin:" .. case[1] .. "\n", res.body)
      end)
    end
  end)

  local function post(host, ctype, body, chunked)
    return post_to(sb, host, ctype, body, chunked)
  end

  local MP = "multipart/form-data; boundary=XyZ"
  local function multipart(name, value)
    return "--XyZ\r\nContent-Disposition: form-data; name=\"" .. name .. "\"\r\n\r\n" .. value
      .. "\r\n--XyZ--\r\n"
  end

  describe("clean request bodies pass (inspected, no false positives)", function()
    for _, case in ipairs {
      { "JSON", "application/json", '{"name":"Ada","tags":["a","b"],"age":36}' },
      { "XML", "application/xml", "<item><name>Ada</name></item>" },
      { "urlencoded", "application/x-www-form-urlencoded", "name=Ada+Lovelace&lang=en&page=2" },
      { "multipart", MP, multipart("comment", "A perfectly normal comment about caching.") },
      { "multipart file upload", MP, "--XyZ\r\nContent-Disposition: form-data; name=\"f\"; "
        .. "filename=\"notes.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\nworld\n\r\n--XyZ--\r\n" },
      { "urlencoded, chunked", "application/x-www-form-urlencoded", "name=Ada&lang=en", true },
    } do
      it(case[1], function()
        local res = post("waf.test", case[2], case[3], case[4])
        assert.equal(200, res.status, res.body)
        assert.equal(case[3], res.body)
      end)
    end
  end)

  describe("attacks in request bodies are denied with 403", function()
    for _, case in ipairs {
      { "SQL injection, urlencoded", "application/x-www-form-urlencoded",
        "user=admin&id=1%27%20OR%20%271%27%3D%271" },
      { "SQL injection, JSON", "application/json",
        '{"id":"1 UNION SELECT username,password FROM users--"}' },
      { "XSS, JSON", "application/json", '{"comment":"<script>alert(document.cookie)</script>"}' },
      { "XSS, multipart", MP, multipart("comment", "<script>alert(document.cookie)</script>") },
      { "RCE, multipart", MP, multipart("host", "127.0.0.1;cat /etc/passwd") },
      { "RCE, urlencoded", "application/x-www-form-urlencoded", "host=127.0.0.1%3Bcat%20/etc/passwd" },
      { "SQL injection, urlencoded, chunked", "application/x-www-form-urlencoded",
        "user=admin&id=1%27%20OR%20%271%27%3D%271", true },
      { "a phase-2 rule on a body argument", "application/x-www-form-urlencoded", "probe=evil" },
    } do
      it(case[1], function()
        local res = post("waf.test", case[2], case[3], case[4])
        assert.equal(403, res.status, res.body)
        assert.truthy(res.body:find("blocked by the web application firewall", 1, true))
      end)
    end
  end)

  describe("request_body_limit (2048 bytes on small.test; post_copy_size 2 MiB)", function()
    local clean = "name=" .. string.rep("a", 3000)

    it("a Content-Length over the limit is answered 413", function()
      local res = post("small.test", "application/x-www-form-urlencoded", clean)
      assert.equal(413, res.status, res.body)
      assert.truthy(res.body:find("Too Large", 1, true))
    end)

    it("a chunked body over the limit is answered 413", function()
      assert.equal(413, post("small.test", "application/x-www-form-urlencoded", clean, true).status)
    end)

    it("a body within the limit is inspected and passes", function()
      local body = "name=" .. string.rep("a", 1500)
      local res = post("small.test", "application/x-www-form-urlencoded", body, true)
      assert.equal(200, res.status, res.body)
      assert.equal(body, res.body)
      assert.equal(403, post("small.test", "application/x-www-form-urlencoded", "probe=evil").status)
    end)

    it("the default limit (1 MiB) passes a 100 KiB form and a 600 KiB upload", function()
      local body = "name=" .. string.rep("b", 100 * 1024)
      local res = post("waf.test", "application/x-www-form-urlencoded", body)
      assert.equal(200, res.status, res.body)
      assert.equal(#body, #res.body)
      body = "--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"big.bin\"\r\n"
        .. "Content-Type: application/octet-stream\r\n\r\n" .. string.rep("c", 600 * 1024) .. "\r\n--XyZ--\r\n"
      res = post("waf.test", MP, body)
      assert.equal(200, res.status, res.body:sub(1, 300))
      assert.equal(#body, #res.body)
    end)

    it("libmodsecurity's own SecRequestBodyNoFilesLimit (128 KiB in the base conf) still applies", function()
      local res = post("waf.test", "application/x-www-form-urlencoded", "name=" .. string.rep("b", 200 * 1024))
      assert.is_true(res.status == 400 or res.status == 413, tostring(res.status))
    end)

    it("request_body = false: no buffering, the body is not inspected, the query still is", function()
      local res = post("nobody.test", "application/x-www-form-urlencoded", "id=1%27%20OR%20%271%27%3D%271")
      assert.equal(200, res.status, res.body)
      assert.equal(403, sb:get("nobody.test", "/item?id=1%27%20OR%20%271%27=%271", { curl = BROWSER }).status)
    end)

    it("the proxy keeps serving", function()
      assert.is_true(sb:alive())
      assert.equal(200, get("/after-bodies").status)
    end)
  end)

  describe("attacks are denied with 403", function()
    local attacks = {
      { "SQL injection in the query", "/item?id=1%27%20OR%20%271%27=%271" },
      { "SQL injection (UNION SELECT)", "/item?id=1%20UNION%20SELECT%20username,password%20FROM%20users--" },
      { "XSS in the query", "/search?q=%3Cscript%3Ealert(document.cookie)%3C/script%3E" },
      { "path traversal in the query", "/download?file=../../../../etc/passwd" },
      { "path traversal in the path", "/static/..%2f..%2f..%2fetc%2fpasswd" },
      { "remote command execution", "/ping?host=127.0.0.1;cat%20/etc/passwd" },
      { "scanner user agent", "/", "-H 'User-Agent: sqlmap/1.7.2#stable (https://sqlmap.org)'" },
      { "scanner user agent (nikto)", "/", "-H 'User-Agent: Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:000001)'" },
      { "SQL injection in a cookie", "/", "-H \"Cookie: id=1' OR '1'='1' --\"" },
      { "XSS in the Referer header", "/", "-H 'Referer: http://x/<script>alert(1)</script>'" },
      { "RCE in the User-Agent", "/", "-H 'User-Agent: () { :; }; /bin/bash -c \"cat /etc/passwd\"'" },
    }
    for _, case in ipairs(attacks) do
      it(case[1], function()
        local res = get(case[2], case[3])
        assert.equal(403, res.status, res.body)
        assert.truthy(res.body:find("blocked by the web application firewall", 1, true))
        assert.falsy(res.body:find("origin:", 1, true))
      end)
    end
  end)

  it("the talk's custom rule: ARGS:testparam @contains test → 403", function()
    assert.equal(403, get("/?testparam=thisisatest").status)
    assert.equal(200, get("/?testparam=harmless").status)
    assert.truthy(log_has(sb, "ts_ffi_waf.log", 'id "1234"'), sb:log("ts_ffi_waf.log"))
  end)

  it("a rule's own status is the response's (deny,status:418 on a request header)", function()
    assert.equal(418, get("/", "-H 'X-Waf-Test: teapot'").status)
    assert.equal(200, get("/", "-H 'X-Waf-Test: coffee'").status)
  end)

  it("drop is answered like deny (403)", function()
    assert.equal(403, get("/?drop=me").status)
  end)

  it("deny,status:444 closes the client connection without a response (query and body)", function()
    local res = get("/?close=now")
    assert.equal(0, res.status, res.body)
    res = post_to(sb, "waf.test", FORM, "close=now")
    assert.equal(0, res.status, res.body)
    assert.is_true(sb:alive())
    assert.equal(200, get("/after-close").status)
  end)

  it("redirect sends the client elsewhere with Location", function()
    local res = get("/?go=away")
    assert.equal(302, res.status, res.body)
    assert.equal("http://moved.test/elsewhere", res.headers["location"])
  end)

  it("a response header can deny (phase 3)", function()
    local res = get("/leak-header")
    assert.equal(403, res.status, res.body)
    assert.falsy(res.body:find("origin:", 1, true))
  end)

  it("rule messages go to the ATS text log ts_ffi_waf.log", function()
    get("/item?id=1%27%20OR%20%271%27=%271")
    assert.truthy(log_has(sb, "ts_ffi_waf.log", "942%d%d%d"), sb:log("ts_ffi_waf.log"))
    assert.truthy(log_has(sb, "ts_ffi_waf.log", "%[txn %d+%]"))
  end)

  describe("response bodies (held back until phase 4 decides)", function()
    local function page(host, path)
      return sb:get(host, path, { curl = BROWSER })
    end

    it("a clean page passes intact", function()
      local res = page("waf.test", "/typed/text/html/clean")
      assert.equal(200, res.status)
      assert.equal("<html><head><title>Welcome</title></head><body><p>Hello, world.</p></body></html>\n", res.body)
      assert.equal("text/html", res.headers["content-type"])
    end)

    it("clean application pages and JSON API answers pass intact (no false positives)", function()
      for _, path in ipairs { "/typed/text/html/clean-app", "/typed/application/json/clean-json",
                              "/typed/text/plain/clean-json" } do
        local res = page("waf.test", path)
        assert.equal(200, res.status, path .. ": " .. res.body)
        assert.truthy(res.body:find("Widget", 1, true) or res.body:find("Caf\xC3\xA9 mug", 1, true), path)
      end
    end)

    it("a page leaking an SQL error becomes a 403 with the WAF's own body", function()
      local res = page("waf.test", "/typed/text/html/sql-error")
      assert.equal(403, res.status, res.body)
      assert.falsy(res.body:find("Unclosed quotation", 1, true))
      assert.truthy(res.body:find("Request denied", 1, true))
      assert.equal("text/html", res.headers["content-type"])
      assert.truthy(log_has(sb, "ts_ffi_waf.log", "SQL Information Leakage"))
    end)

    it("PHP source code in a text/plain body becomes a 403", function()
      local res = page("waf.test", "/typed/text/plain/php-source")
      assert.equal(403, res.status, res.body)
      assert.falsy(res.body:find("session_start", 1, true))
    end)

    it("media types not inspected pass (application/octet-stream)", function()
      local res = page("waf.test", "/typed/application/octet-stream/sql-error")
      assert.equal(200, res.status)
      assert.truthy(res.body:find("Unclosed quotation", 1, true))
    end)

    it("response = false: bodies are not inspected", function()
      assert.equal(200, page("noresponse.test", "/typed/text/html/sql-error").status)
    end)

    it("a leak within response_body_limit is found; past it the rest passes uninspected", function()
      assert.equal(403, page("rlimit.test", "/typed/text/html/sql-error/3000").status)
      local res = page("rlimit.test", "/typed/text/html/sql-error/5000")
      assert.equal(200, res.status)
      assert.equal(string.rep("-", 5000), res.body:sub(1, 5000))
      assert.truthy(res.body:find("</html>\n$"))
      -- the default limit: 512 KiB
      assert.equal(403, page("waf.test", "/typed/text/html/sql-error/500000").status)
      assert.equal(200, page("waf.test", "/typed/text/html/sql-error/530000").status)
    end)

    it("a large clean body passes intact", function()
      local res = page("waf.test", "/typed/text/html/clean/400000")
      assert.equal(200, res.status)
      assert.equal(string.rep("-", 400000)
        .. "<html><head><title>Welcome</title></head><body><p>Hello, world.</p></body></html>\n", res.body)
    end)

    it("clients hanging up while their bodies are held or inspected: still serving", function()
      -- 500 KB bodies take milliseconds to inspect; these clients leave after 30 ms.
      local urls = {}
      for i = 1, 30 do
        urls[i] = string.format("-o /dev/null 'http://127.0.0.1:%d/typed/text/html/%s/%d'", sb.port,
          i % 2 == 0 and "sql-error" or "clean", 500000 + i)
      end
      os.execute("curl -s -Z --parallel-max 30 --max-time 0.03 -H 'Host: waf.test' " .. BROWSER .. " "
        .. table.concat(urls, " ") .. " >/dev/null 2>&1")
      os.execute("sleep 1")
      assert.is_true(sb:alive())
      assert.equal(403, page("waf.test", "/typed/text/html/sql-error").status)
      assert.equal(200, page("waf.test", "/typed/text/html/clean").status)
    end)

    it("concurrent leaking and clean pages: right answers, still serving", function()
      local paths = {}
      for i = 1, 40 do
        paths[i] = (i % 2 == 0) and "/typed/text/html/sql-error/" .. i or "/typed/text/html/clean/" .. i
      end
      local res = sb:get_parallel("waf.test", paths, { max = 20, timeout = 60 })
      for i, r in ipairs(res) do
        assert.equal((i % 2 == 0) and 403 or 200, r.status, paths[i])
      end
      assert.is_true(sb:alive())
    end)
  end)

  it("unprotected remap rules are untouched", function()
    local res = sb:get("plain.test", "/item?id=1%27%20OR%20%271%27=%271")
    assert.equal(200, res.status)
  end)

  it("concurrent clean and attack requests: right answers, no crash, still serving", function()
    local paths = {}
    for i = 1, 60 do
      paths[i] = (i % 3 == 0) and ("/x?id=" .. i .. "%27%20OR%20%271%27=%271") or ("/ok/" .. i .. "?a=" .. i)
    end
    local res = sb:get_parallel("waf.test", paths, { max = 20, timeout = 60 })
    for i, r in ipairs(res) do
      assert.equal((i % 3 == 0) and 403 or 200, r.status, paths[i])
    end
    assert.is_true(sb:alive())
    assert.equal(200, get("/after-load").status)
  end)
end)

describe("ts_ffi.waf on cache hits (the response phases run on the cached response)", function()
  local sb

  setup(function()
    sb = ats.start {
      remap = { ["waf.test"] = S .. "waf.lua", ["plain.test"] = {} },
      records = { "CONFIG proxy.config.http.cache.http INT 1",
                  "CONFIG proxy.config.log.max_secs_per_buffer INT 1" },
      start_timeout = 30,
    }
  end)

  teardown(function()
    if sb then sb:stop() end
  end)

  -- Fills the cache through the unprotected rule (same origin URL, same cache key).
  local function cached(path)
    local first = sb:get("plain.test", path)
    assert.equal(200, first.status)
    local again = sb:get("plain.test", path)
    assert.equal(first.headers["x-origin-count"], again.headers["x-origin-count"], "not cached")
    return first
  end

  it("a cached clean page is served from the cache and passes", function()
    local first = cached("/cached/text/html/clean")
    local res = sb:get("waf.test", "/cached/text/html/clean", { curl = BROWSER })
    assert.equal(200, res.status)
    assert.equal(first.headers["x-origin-count"], res.headers["x-origin-count"])
    assert.equal(first.body, res.body)
  end)

  it("a cached page leaking an SQL error becomes a 403", function()
    local first = cached("/cached/text/html/sql-error")
    assert.truthy(first.body:find("Unclosed quotation", 1, true))
    local res = sb:get("waf.test", "/cached/text/html/sql-error", { curl = BROWSER })
    assert.equal(403, res.status, res.body)
    assert.falsy(res.body:find("Unclosed quotation", 1, true))
  end)

  it("a cached response header is inspected (phase 3 on a hit)", function()
    cached("/cached/text/html/clean?p=leak-header")
    assert.equal(403, sb:get("waf.test", "/cached/text/html/clean?p=leak-header", { curl = BROWSER }).status)
    assert.is_true(sb:alive())
  end)
end)

describe("ts_ffi.waf with ATS's default post_copy_size (2048 bytes)", function()
  local sb

  setup(function()
    sb = ats.start { remap = { ["waf.test"] = S .. "waf.lua" }, start_timeout = 30 }
  end)

  teardown(function()
    if sb then sb:stop() end
  end)

  local function post(body, chunked)
    return post_to(sb, "waf.test", FORM, body, chunked)
  end

  it("the effective limit is post_copy_size: a larger Content-Length gets 413", function()
    assert.equal(413, post("name=" .. string.rep("a", 3000)).status)
    assert.equal(200, post("name=" .. string.rep("a", 1000)).status)
  end)

  it("a larger chunked body is cut off by ATS itself (no response); the proxy keeps serving", function()
    assert.equal(0, post("name=" .. string.rep("a", 3000), true).status)
    assert.is_true(sb:alive())
    assert.equal(200, sb:get("waf.test", "/after", { curl = BROWSER }).status)
    assert.equal(403, post("id=1%27%20OR%20%271%27%3D%271", true).status)
  end)
end)

describe("ts_ffi.waf from do_global_read_request", function()
  local sb

  setup(function()
    sb = ats.start { global = S .. "waf.lua", remap = { ["g.test"] = {} }, start_timeout = 30 }
  end)

  teardown(function()
    if sb then sb:stop() end
  end)

  it("denies an attack and passes a clean request", function()
    assert.equal(403, sb:get("g.test", "/search?q=%3Cscript%3Ealert(1)%3C/script%3E",
      { curl = BROWSER }).status)
    local res = sb:get("g.test", "/fine?x=1", { curl = BROWSER })
    assert.equal(200, res.status)
    assert.equal("origin:/fine?x=1\n", res.body)
  end)
end)

describe("ts_ffi.waf fail policy (engine failure injected with TS_FFI_WAF_FAULT=engine)", function()
  local sb

  setup(function()
    sb = ats.start {
      remap = { ["closed.test"] = S .. "waf.lua", ["open.test"] = { S .. "waf.lua", "open" } },
      env = { TS_FFI_WAF_FAULT = "engine" },
      records = FAST_LOG,
      start_timeout = 30,
    }
  end)

  teardown(function()
    if sb then sb:stop() end
  end)

  it("fail-closed (the default) answers 503", function()
    assert.equal(503, sb:get("closed.test", "/", { curl = BROWSER }).status)
    assert.truthy(log_has(sb, "ts_ffi_waf.log", "engine failure"))
  end)

  it("fail-open passes the request uninspected", function()
    local res = sb:get("open.test", "/?testparam=test", { curl = BROWSER })
    assert.equal(200, res.status)
  end)
end)
