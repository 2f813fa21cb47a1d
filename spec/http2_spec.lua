-- HTTP/2: where the server offers it (ALPN over TLS), requests go out as
-- streams multiplexed on one connection. The server is nghttpd (Debian's
-- nghttp2-server), which speaks nothing but HTTP/2 and logs every frame;
-- it serves static JSON files, so the calls are fleet.request.
local gf = require("spec.support.gitfleet")
local socket = require("socket")

local FILES = 24

-- A port nothing listens on now (the kernel's pick, released at once).
local function free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return port
end

describe("HTTP/2", function()
  local dir, port, pid

  setup(function()
    dir = gf.tmpdir()
    assert.is_true(os.execute(("openssl req -x509 -newkey rsa:2048 -nodes -keyout %s/key.pem -out %s/cert.pem "
      .. "-days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1"):format(dir, dir)))
    os.execute("mkdir -p " .. dir .. "/docs")
    -- Files large enough (about 650 KB) that transfers overlap.
    local item = '{"pad":"' .. ("x"):rep(200) .. '","n":%d}'
    for i = 1, FILES do
      local items = {}
      for k = 1, 3000 do items[k] = item:format(k) end
      gf.write(("%s/docs/r%d.json"):format(dir, i), "[" .. table.concat(items, ",") .. "]")
    end
    port = free_port()
    pid = gf.capture(("stdbuf -oL nghttpd -v -d %s/docs %d %s/key.pem %s/cert.pem >%s/nghttpd.log 2>&1 & echo $!")
      :format(dir, port, dir, dir, dir))
    -- Ready when it accepts a connection (a TCP one: an HTTP request here
    -- would show in the log the spec reads).
    local up = false
    for _ = 1, 100 do
      local conn = socket.connect("127.0.0.1", port)
      if conn then
        conn:close()
        up = true
        break
      end
      socket.sleep(0.05)
    end
    assert.is_true(up, "nghttpd did not start:\n" .. (gf.slurp(dir .. "/nghttpd.log") or ""))
  end)

  teardown(function()
    if pid then os.execute("kill " .. pid .. " 2>/dev/null") end
    gf.cleanup()
  end)

  it("sends concurrent requests as streams of one connection", function()
    local cfg = gf.config({ providers = { github = { base_url = ("https://127.0.0.1:%d"):format(port) } },
      -- A stream left unread would sit until this timeout and be retried,
      -- which the stream count below would show.
      http = { ca_file = dir .. "/cert.pem", per_token_concurrency = 8, timeout = 5 }, cache = { enabled = false } },
      gf.tmpdir())
    local script = ([[
      local paths = {}
      for i = 1, %d do paths[i] = "/r" .. i .. ".json" end
      local sizes, errors = fleet.map(paths, function(p)
        local resp = assert(fleet.request("GET", p))
        return resp.status .. ":" .. #resp.data
      end, { concurrency = %d })
      assert(not errors, errors and tostring(select(2, next(errors))))
      print(table.concat(sizes, " "))
    ]]):format(FILES, FILES)

    -- What the server saw of one run (the log from `from` on): connections,
    -- streams, and how many streams were open at once on a connection.
    local function seen(from)
      local log = (gf.slurp(dir .. "/nghttpd.log") or ""):sub(from + 1)
      local connections, streams, open, peak = {}, 0, {}, 0
      for line in log:gmatch("[^\n]+") do
        local conn, sid = line:match("^%[id=(%d+)%].-recv HEADERS frame <.-stream_id=(%d+)>")
        if conn then
          connections[conn] = true
          streams = streams + 1
          open[conn .. ":" .. sid] = true
          local n = 0
          for key in pairs(open) do if key:match("^" .. conn .. ":") then n = n + 1 end end
          peak = math.max(peak, n)
        end
        conn, sid = line:match("^%[id=(%d+)%].-send DATA frame <.-flags=0x01, stream_id=(%d+)>")
        if conn then open[conn .. ":" .. sid] = nil end
      end
      assert.is_nil(next(open), "the ends of streams were not recognised in the log")
      local count = 0
      for _ in pairs(connections) do count = count + 1 end
      return streams, count, peak
    end

    -- Whether two streams overlap at the server depends on scheduling: a
    -- client descheduled between two requests on a busy machine can see
    -- each 650 KB answer end before its next request arrives. So up to
    -- three runs, each of which must use one connection, and one of which
    -- must show streams open at once.
    local peak = 0
    for _ = 1, 3 do
      local from = #(gf.slurp(dir .. "/nghttpd.log") or "")
      local r = gf.run_script(script, cfg)
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal(("200:3000 "):rep(FILES - 1) .. "200:3000\n", r.stdout)
      local streams, connections, run_peak = seen(from)
      assert.are.equal(FILES, streams)
      assert.are.equal(1, connections)
      peak = run_peak
      if peak >= 2 then break end
    end
    assert.is_true(peak >= 2, "never two streams open at once, in three runs")
  end)
end)
