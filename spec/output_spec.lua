-- The record writers (runtime/output.c, runtime/loutput.c), through the real
-- binary: each case is a Lua script run by `gitfleet run SCRIPT` that uses
-- require("fleet.core").writer directly, writing into a temporary folder;
-- the spec then reads the files back with independent parsers (lua-cjson,
-- Python's json and csv modules) and Lua's strict utf8.len.
--
-- GITFLEET_BIN is the binary (default ./gitfleet); GITFLEET_WRAPPER, when
-- set, prefixes each run (make valgrind). Run from the repository's root.

local cjson = require("cjson")

local gf = require("spec.support.gitfleet")

-- A file the spec expects to exist.
local function slurp(path)
    return assert(gf.slurp(path))
end

-- Every script starts with this: the writer module, cjson, the folder, and
-- `result(name, ...)`, which keeps what a call returned for the spec (in
-- DIR/result.json: {name = {n=, [1]=, [2]=}}, nil as cjson.null, anything
-- that JSON cannot hold as its type name).
local PRELUDE = [[
local core = require("fleet.core")
local cjson = require("cjson")
local DIR = %s
local results = {}
local function result(name, ...)
    local n = select("#", ...)
    local r = {n = n}
    for i = 1, n do
        local v = select(i, ...)
        local t = type(v)
        if v == nil then
            v = cjson.null
        elseif t ~= "string" and t ~= "number" and t ~= "boolean" then
            v = "<" .. t .. ">"
        end
        r[tostring(i)] = v
    end
    results[name] = r
end
local function save_results()
    local f = assert(io.open(DIR .. "/result.json", "w"))
    f:write(cjson.encode(results))
    f:close()
end
]]

-- Runs a script (PRELUDE, body, save_results()) and returns
-- {code=, stdout=, stderr=, results=, dir=}. `pipe`: a shell command that
-- reads the script's stdout instead of a file; `setup`: shell commands run
-- before, in the same shell (limits).
local function run(body, pipe, setup)
    local dir = gf.tmpdir()
    local script = gf.script(PRELUDE:format(("%q"):format(dir)) .. body .. "\nsave_results()\n", dir)
    local r = gf.run({ "run", script }, { pipe = pipe, before = setup })
    r.dir = dir
    local text = gf.slurp(dir .. "/result.json")
    r.results = text and cjson.decode(text) or {}
    return r
end

local function assert_ran(r)
    assert.are.equal(0, r.code, "exit code; stderr: " .. r.stderr)
end

-- Python, given the file: prints JSON, which comes back decoded.
local function python(code, path)
    local p = assert(io.popen("python3 -c " .. gf.quote(code) .. " " .. gf.quote(path) .. " 2>&1"))
    local text = p:read("a")
    local ok = p:close()
    assert(ok, "python failed: " .. text)
    return cjson.decode(text)
end

-- Each line of an NDJSON file as the list of its top-level keys, in order.
local function ndjson_keys(path)
    return python([[
import json, sys
data = open(sys.argv[1], "rb").read().decode("utf-8")
assert data.endswith("\n"), "no final newline"
print(json.dumps([[k for k, _ in json.loads(l, object_pairs_hook=lambda p: p)]
                  for l in data[:-1].split("\n")]))
]], path)
end

-- A CSV file as rows of fields, by Python's csv module, in strict UTF-8.
local function csv_rows(path)
    return python([[
import csv, json, sys
with open(sys.argv[1], newline="", encoding="utf-8", errors="strict") as f:
    print(json.dumps(list(csv.reader(f, strict=True))))
]], path)
end

local function lines(text)
    local t = {}
    for line in text:gmatch("([^\n]*)\n") do
        t[#t + 1] = line
    end
    return t
end

local function assert_utf8(text)
    assert.is_truthy(utf8.len(text), "output is not valid UTF-8")
end

local FFFD = "\u{FFFD}"

-- Strings worth carrying intact: accents, CJK, emoji (with a ZWJ sequence),
-- right-to-left scripts, and the characters CSV and JSON care about.
local UNICODE = {
    accents = "Café crème, naïve façade — Ångström",
    cjk = "日本語のリポジトリ 中文 한국어",
    emoji = "🚀 fast 🔥 👩‍💻",
    rtl = "مستودع عربي · מאגר עברי",
}

describe("core.writer #valgrind", function()
    after_each(gf.cleanup)

    describe("ndjson", function()
        it("writes the listed fields in order, absent ones as null, then the rest sorted", function()
            local r = run([[
local w = core.writer("ndjson", DIR .. "/out.ndjson",
    {fields = {"id", "name", "owner.login", "description", "topics", "language"}, all_fields = true,
     null = cjson.null})
result("first", w:write({id = 1, name = "alpha", owner = {login = "ann", id = 7}, topics = {},
    zeta = true, beta = cjson.null, description = "first"}))
result("second", w:write({name = "beta", topics = {"lua", "c"}, language = cjson.null}))
result("count", w:count())
result("close", w:close())
]])
            assert_ran(r)
            assert.are.same({ n = 1, ["1"] = true }, r.results.first)
            assert.are.same({ n = 1, ["1"] = true }, r.results.second)
            assert.are.same({ n = 1, ["1"] = 2 }, r.results.count)
            assert.are.same({ n = 1, ["1"] = true }, r.results.close)
            local path = r.dir .. "/out.ndjson"
            assert.are.same({
                { "id", "name", "owner.login", "description", "topics", "language", "beta", "owner", "zeta" },
                { "id", "name", "owner.login", "description", "topics", "language" },
            }, ndjson_keys(path))
            local l = lines(slurp(path))
            local a, b = cjson.decode(l[1]), cjson.decode(l[2])
            assert.are.equal(1, a.id)
            assert.are.equal("ann", a["owner.login"])
            assert.are.same({}, a.topics)
            assert.is_truthy(l[1]:find('"topics":[]', 1, true), "an empty table is an empty array")
            assert.are.equal(cjson.null, a.language)
            assert.are.equal(cjson.null, a.beta)
            assert.are.same({ id = 7, login = "ann" }, a.owner)
            assert.are.equal(cjson.null, b.id)
            assert.are.equal(cjson.null, b["owner.login"])
            assert.are.equal(cjson.null, b.description)
            assert.are.same({ "lua", "c" }, b.topics)
        end)

        it("without fields writes every key, sorted, nested objects too", function()
            local r = run([[
local w = core.writer("ndjson", DIR .. "/out.ndjson", {})
w:write({b = 1, a = {z = 1, y = {x = 2, w = 3}}, c = "x", [10] = "ten", [2] = "two", [1.5] = "f"})
w:close()
]])
            assert_ran(r)
            assert.are.equal('{"1.5":"f","10":"ten","2":"two","a":{"y":{"w":3,"x":2},"z":1},"b":1,"c":"x"}\n',
                slurp(r.dir .. "/out.ndjson"))
        end)

        it("writes numbers exactly, and NaN and infinities as null", function()
            local r = run([[
local w = core.writer("ndjson", DIR .. "/out.ndjson", {fields = {"max", "min", "f", "third", "big", "nan", "inf", "ninf", "t", "f2"}})
w:write({max = math.maxinteger, min = math.mininteger, f = 0.1, third = 1 / 3, big = 1e300,
    nan = 0 / 0, inf = math.huge, ninf = -math.huge, t = true, f2 = false})
w:close()
]])
            assert_ran(r)
            local text = slurp(r.dir .. "/out.ndjson")
            assert.is_truthy(text:find('"max":9223372036854775807,', 1, true), text)
            assert.is_truthy(text:find('"min":-9223372036854775808,', 1, true), text)
            assert.is_truthy(text:find('"nan":null,"inf":null,"ninf":null,"t":true,"f2":false}', 1, true), text)
            local rec = cjson.decode(text)
            assert.are.equal(0.1, rec.f)
            assert.are.equal(1 / 3, rec.third)
            assert.are.equal(1e300, rec.big)
        end)

        it("escapes quotes, backslashes and control characters", function()
            local r = run([[
local w = core.writer("ndjson", DIR .. "/out.ndjson", {fields = {"s"}})
w:write({s = "q\"b\\n\nr\rt\t\1\31\0 end"})
w:close()
]])
            assert_ran(r)
            local text = slurp(r.dir .. "/out.ndjson")
            assert.are.equal('{"s":"q\\"b\\\\n\\nr\\rt\\t\\u0001\\u001f\\u0000 end"}\n', text)
            assert.are.equal("q\"b\\n\nr\rt\t\1\31\0 end", cjson.decode(text).s)
        end)

        it("keeps Unicode intact", function()
            local r = run([[
local w = core.writer("ndjson", DIR .. "/out.ndjson", {fields = {"accents", "cjk", "emoji", "rtl"}})
w:write(]] .. ("{accents = %q, cjk = %q, emoji = %q, rtl = %q}"):format(UNICODE.accents, UNICODE.cjk,
                UNICODE.emoji, UNICODE.rtl) .. [[)
w:close()
]])
            assert_ran(r)
            local text = slurp(r.dir .. "/out.ndjson")
            assert_utf8(text)
            assert.are.same(UNICODE, cjson.decode(text))
        end)

        it("replaces ill-formed UTF-8 with U+FFFD, one per maximal subpart", function()
            local r = run([[
local w = core.writer("ndjson", DIR .. "/out.ndjson", {fields = {"s"}})
for _, s in ipairs({"a\xFFb", "\xC0\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80", "x\xE6\x97", "\xE6\x97y",
                    "\x80\xBF", "\xF0\x9F\x98\x80\xF0\x9F\x98", "ok é"}) do
    w:write({s = s})
end
w:close()
]])
            assert_ran(r)
            local text = slurp(r.dir .. "/out.ndjson")
            assert_utf8(text)
            local got = {}
            for _, l in ipairs(lines(text)) do
                got[#got + 1] = cjson.decode(l).s
            end
            assert.are.same({
                "a" .. FFFD .. "b",
                FFFD .. FFFD,                       -- overlong
                FFFD:rep(3),                        -- a surrogate
                FFFD:rep(4),                        -- above U+10FFFF
                "x" .. FFFD,                        -- truncated at the end
                FFFD .. "y",                        -- truncated before ASCII
                FFFD .. FFFD,                       -- stray continuation bytes
                "😀" .. FFFD,
                "ok é",
            }, got)
        end)

        it("sanitises random bytes exactly as Python's decode(errors='replace')", function()
            -- The same Unicode practice (one U+FFFD per maximal ill-formed
            -- subpart), checked on NDJSON and CSV against an independent
            -- implementation. The raw strings go to a side file.
            local r = run([[
math.randomseed(20240601)
local pieces = {"\xC0", "\xC1", "\xC2", "\xDF", "\xE0", "\xE0\xA0", "\xE0\x80", "\xED", "\xED\xA0",
    "\xED\x9F\xBF", "\xEF\xBF\xBF", "\xF0", "\xF0\x90", "\xF0\x80", "\xF4\x8F\xBF\xBF", "\xF4\x90",
    "\xF5", "\xFF", "\x80", "\xBF", "a", '"', "\\", "\n", "\r", "\0", "\x1f", ",", " ", "é", "日", "😀"}
local raw = assert(io.open(DIR .. "/raw.bin", "wb"))
local nd = core.writer("ndjson", DIR .. "/out.ndjson", {fields = {"s"}})
local csv = core.writer("csv", DIR .. "/out.csv", {fields = {"s", "n"}})
for i = 1, 3000 do
    local t = {}
    for j = 1, math.random(0, 12) do
        t[j] = math.random() < 0.5 and pieces[math.random(#pieces)] or string.char(math.random(0, 255))
    end
    local s = table.concat(t)
    raw:write(string.pack("<s4", s))
    nd:write({s = s})
    csv:write({s = s, n = i})
end
raw:close()
result("nd", nd:close())
result("csv", csv:close())
]])
            assert_ran(r)
            assert.are.same({ n = 1, ["1"] = true }, r.results.nd)
            assert.are.same({ n = 1, ["1"] = true }, r.results.csv)
            local checked = python([==[
import csv, io, json, struct, sys
d = sys.argv[1]
raw = open(d + "/raw.bin", "rb").read()
want, i = [], 0
while i < len(raw):
    (n,) = struct.unpack_from("<I", raw, i)
    want.append(raw[i + 4:i + 4 + n].decode("utf-8", "replace"))
    i += 4 + n
nd = open(d + "/out.ndjson", "rb").read().decode("utf-8")
got = [json.loads(l)["s"] for l in nd[:-1].split("\n")]
assert got == want, "ndjson differs"
rows = list(csv.reader(io.StringIO(open(d + "/out.csv", "rb").read().decode("utf-8"), newline="")))
assert rows[0] == ["s", "n"] and [r[0] for r in rows[1:]] == want, "csv differs"
print(len(want))
]==], r.dir)
            assert.are.equal(3000, checked)
        end)

        it("refuses a record nested too deep, or with a cycle, and goes on", function()
            local r = run([[
local function nest(n)
    local t = {}
    for _ = 1, n do t = {t} end
    return t
end
local w = core.writer("ndjson", DIR .. "/out.ndjson", {fields = {"id", "deep"}})
-- the record is level 1: 63 more levels are allowed, 64 are not
result("ok", w:write({id = 1, deep = nest(62)}))
result("deep", w:write({id = 2, deep = nest(63)}))
local cycle = {}
cycle.self = cycle
result("cycle", w:write({id = 3, deep = cycle}))
result("fn", w:write({id = 4, deep = print}))
result("after", w:write({id = 5}))
result("count", w:count())
w:close()
]])
            assert_ran(r)
            assert.are.same({ n = 1, ["1"] = true }, r.results.ok)
            for _, name in ipairs({ "deep", "cycle" }) do
                assert.are.equal(cjson.null, r.results[name]["1"])
                assert.are.equal("field 'deep': nesting too deep (more than 64 levels)", r.results[name]["2"])
            end
            assert.are.equal("field 'deep': cannot encode a function", r.results.fn["2"])
            assert.are.same({ n = 1, ["1"] = true }, r.results.after)
            assert.are.same({ n = 1, ["1"] = 2 }, r.results.count)
            local l = lines(slurp(r.dir .. "/out.ndjson"))
            assert.are.equal(2, #l)
            assert.are.equal(1, cjson.decode(l[1]).id)
            assert.are.equal('{"id":5,"deep":null}', l[2])
        end)

        it("writes many records in one call, stopping at the first that fails", function()
            local r = run([[
local recs = {}
for i = 1, 5000 do
    recs[i] = {id = i, name = "repo-" .. i, description = ("déjà vu %d "):format(i):rep(20), topics = {"a", "b"}}
end
local w = core.writer("ndjson", DIR .. "/out.ndjson", {fields = {"id", "name"}, all_fields = true})
result("many", w:write_many(recs))
local bad = {{id = 5001}, {id = 5002, x = print}, {id = 5003}}
result("bad", w:write_many(bad))
result("count", w:count())
result("misuse", pcall(w.write_many, w, {{id = 1}, 42}))
result("count2", w:count())
w:close()
]])
            assert_ran(r)
            assert.are.same({ n = 1, ["1"] = true }, r.results.many)
            assert.are.equal("record 2: field 'x': cannot encode a function", r.results.bad["2"])
            assert.are.equal(5001, r.results.count["1"])
            assert.is_false(r.results.misuse["1"])
            assert.is_truthy(r.results.misuse["2"]:find("record 2 is a number", 1, true))
            assert.are.equal(5001, r.results.count2["1"])
            local text = slurp(r.dir .. "/out.ndjson")
            assert_utf8(text)
            local l = lines(text)
            assert.are.equal(5001, #l)
            for i, line in ipairs(l) do
                assert.are.equal(i, cjson.decode(line).id)
            end
        end)

        it("writes a record larger than the buffer whole", function()
            local r = run([[
local w = core.writer("ndjson", DIR .. "/out.ndjson", {fields = {"id", "big"}})
w:write({id = 1, big = ("ü"):rep(150000)})
w:write({id = 2, big = "small"})
w:close()
]])
            assert_ran(r)
            local l = lines(slurp(r.dir .. "/out.ndjson"))
            assert.are.equal(2, #l)
            assert.are.equal(("ü"):rep(150000), cjson.decode(l[1]).big)
        end)

        it("writes to stdout for a nil path or '-', and leaves stdout open", function()
            local r = run([[
local w = core.writer("ndjson", nil, {fields = {"id"}})
w:write({id = 1})
result("close", w:close())
local w2 = core.writer("ndjson", "-", {fields = {"id"}})
w2:write({id = 2})
w2:close()
io.stdout:write("still open\n")
]])
            assert_ran(r)
            assert.are.same({ n = 1, ["1"] = true }, r.results.close)
            assert.are.equal('{"id":1}\n{"id":2}\nstill open\n', r.stdout)
        end)
    end)

    describe("json", function()
        it("an empty writer is an empty array", function()
            local r = run([[
local w = core.writer("json", DIR .. "/out.json", {fields = {"id"}})
result("close", w:close())
]])
            assert_ran(r)
            assert.are.equal("[]\n", slurp(r.dir .. "/out.json"))
        end)

        it("is one array, also when a record in the middle fails", function()
            local r = run([[
local w = core.writer("json", DIR .. "/out.json", {fields = {"id", "name"}})
w:write({id = 1, name = "a"})
local t = {}
t[1] = t
result("bad", w:write({id = 2, name = t}))
w:write_many({{id = 3, name = "c"}, {id = 4, name = cjson.null}})
result("close", w:close())
result("again", w:close())
]])
            assert_ran(r)
            assert.are.equal(cjson.null, r.results.bad["1"])
            assert.are.same({ n = 1, ["1"] = true }, r.results.close)
            assert.are.same({ n = 1, ["1"] = true }, r.results.again)
            local text = slurp(r.dir .. "/out.json")
            assert.are.equal('[{"id":1,"name":"a"},\n{"id":3,"name":"c"},\n{"id":4,"name":null}]\n', text)
            local arr = python([[
import json, sys
print(json.dumps(json.load(open(sys.argv[1], encoding="utf-8"))))
]], r.dir .. "/out.json")
            assert.are.equal(3, #arr)
            assert.are.equal(4, arr[3].id)
        end)
    end)

    describe("csv", function()
        it("writes a header and one row per record, quoting what needs it", function()
            local r = run([[
local w = core.writer("csv", DIR .. "/out.csv",
    {fields = {"id", "name", "owner.login", "description", "topics", "license", "fork", "score", "homepage"},
     null = cjson.null})
w:write({id = 1, name = "plain", owner = {login = "ann"}, description = 'a, "quoted"\nmulti-line\r\ntext',
    topics = {"lua", "c", 3}, license = {spdx_id = "MIT", key = "mit"}, fork = false, score = 0.5,
    homepage = cjson.null})
w:write({id = 2, name = " padded ", owner = {login = " lead"}, description = "", topics = {}, fork = true, score = 0 / 0})
w:write(]] .. ("{id = 3, name = %q, description = %q, topics = {%q, %q}}"):format(UNICODE.accents,
                UNICODE.cjk, UNICODE.emoji, UNICODE.rtl) .. [[)
w:write({id = 4, topics = {{a = 1}, cjson.null, true}})
result("close", w:close())
]])
            assert_ran(r)
            assert.are.same({ n = 1, ["1"] = true }, r.results.close)
            local path = r.dir .. "/out.csv"
            local raw = slurp(path)
            assert.are.equal("id,name,owner.login,description,topics,license,fork,score,homepage\r\n",
                raw:sub(1, 68))
            assert.are.equal("\r\n", raw:sub(-2))
            -- leading and trailing spaces are quoted, so no reader trims them
            assert.is_truthy(raw:find('\r\n2," padded "," lead",,,,true,,\r\n', 1, true), raw)
            local rows = csv_rows(path)
            assert.are.equal(5, #rows)
            assert.are.same({ "1", "plain", "ann", 'a, "quoted"\nmulti-line\r\ntext', "lua;c;3",
                '{"key":"mit","spdx_id":"MIT"}', "false", "0.5", "" }, rows[2])
            assert.are.same({ "2", " padded ", " lead", "", "", "", "true", "", "" }, rows[3])
            assert.are.same({ "3", UNICODE.accents, "", UNICODE.cjk, UNICODE.emoji .. ";" .. UNICODE.rtl,
                "", "", "", "" }, rows[4])
            assert.are.same({ "4", "", "", "", '{"a":1};;true', "", "", "", "" }, rows[5])
        end)

        it("replaces ill-formed UTF-8 with U+FFFD", function()
            local r = run([[
local w = core.writer("csv", DIR .. "/out.csv", {fields = {"s", "t"}})
w:write({s = "a\xFFb,\xC0", t = {"\xED\xA0\x80", "ok"}})
w:close()
]])
            assert_ran(r)
            local raw = slurp(r.dir .. "/out.csv")
            assert_utf8(raw)
            local rows = csv_rows(r.dir .. "/out.csv")
            assert.are.same({ "a" .. FFFD .. "b," .. FFFD, FFFD:rep(3) .. ";ok" }, rows[2])
        end)

        it("a one-column row that is empty is still a row", function()
            local r = run([[
local w = core.writer("csv", DIR .. "/out.csv", {fields = {"description"}})
w:write_many({{description = "x"}, {}, {description = "y"}})
w:close()
]])
            assert_ran(r)
            assert.are.same({ { "description" }, { "x" }, { "" }, { "y" } }, csv_rows(r.dir .. "/out.csv"))
        end)
    end)

    describe("failures", function()
        it("a path in a missing folder is nil, err", function()
            local r = run([[
result("open", core.writer("ndjson", DIR .. "/no/such/folder/out.ndjson", {}))
]])
            assert_ran(r)
            assert.are.equal(cjson.null, r.results.open["1"])
            assert.is_truthy(r.results.open["2"]:find("no/such/folder/out.ndjson: No such file or directory", 1,
                true), r.results.open["2"])
        end)

        it("a full disk is nil, err, never an error raised", function()
            local r = run([[
local w = core.writer("ndjson", "/dev/full", {fields = {"id"}})
result("write", w:write({id = 1}))
result("close", w:close())
result("again", w:close())
]])
            assert_ran(r)
            assert.are.same({ n = 1, ["1"] = true }, r.results.write) -- buffered
            assert.are.equal(cjson.null, r.results.close["1"])
            assert.are.equal("cannot write to /dev/full: No space left on device", r.results.close["2"])
            assert.are.same(r.results.close, r.results.again)
        end)

        it("a file that cannot grow fails and is left as it was", function()
            -- RLIMIT_FSIZE, with SIGXFSZ ignored: write(2) stops short, then
            -- fails with EFBIG, in the middle of the second or third buffer.
            local r = run([[
local f = assert(io.open(DIR .. "/out.ndjson", "w"))
f:write("OLD\n")
f:close()
local w = core.writer("ndjson", DIR .. "/out.ndjson", {fields = {"id", "pad"}})
local ok, err
for i = 1, 100000 do
    ok, err = w:write({id = i, pad = ("y"):rep(100 + i % 37)})
    if not ok then break end
end
result("write", ok, err)
result("close", w:close())
]], nil, "trap '' XFSZ; ulimit -f 300; ")
            assert_ran(r)
            assert.are.equal(cjson.null, r.results.write["1"])
            local err = r.results.write["2"]
            assert.is_truthy(err:match("^cannot write to .*/out%.ndjson: File too large$"), err)
            assert.are.equal(err, r.results.close["2"])
            assert.are.equal("OLD\n", slurp(r.dir .. "/out.ndjson"))
            assert.is_nil(gf.capture("ls -A " .. gf.quote(r.dir)):find("gitfleet-", 1, true)) -- no temporary file
        end)

        it("a reader that went away ends the run quietly (exit 141), nothing after the write runs", function()
            local r = run([[
local w = core.writer("ndjson", nil, {fields = {"id", "pad"}})
local ok, err
for i = 1, 100000 do
    ok, err = w:write({id = i, pad = ("x"):rep(200)})
    if not ok then break end
end
result("write", ok, err)
result("close", w:close())
result("alive", true)
]], "head -c 10")
            assert.are.equal(10, #r.stdout)
            assert.are.equal("", r.stderr)
            assert.is_nil(r.results.write)
            assert.is_nil(r.results.alive)
        end)

        it("using a closed writer raises; close is idempotent; count still answers", function()
            local r = run([[
local w = core.writer("ndjson", DIR .. "/out.ndjson", {})
w:write({a = 1})
result("close", w:close())
result("close2", w:close())
result("write", pcall(w.write, w, {a = 2}))
result("many", pcall(w.write_many, w, {{a = 2}}))
result("flush", pcall(w.flush, w))
result("count", w:count())
]])
            assert_ran(r)
            assert.are.same({ n = 1, ["1"] = true }, r.results.close2)
            for _, name in ipairs({ "write", "many", "flush" }) do
                assert.is_false(r.results[name]["1"])
                assert.is_truthy(r.results[name]["2"]:find("the writer is closed", 1, true), r.results[name]["2"])
            end
            assert.are.equal(1, r.results.count["1"])
            assert.are.equal('{"a":1}\n', slurp(r.dir .. "/out.ndjson"))
        end)

        it("misuse raises", function()
            local r = run([[
result("format", pcall(core.writer, "xml", nil, {}))
result("csv_fields", pcall(core.writer, "csv", DIR .. "/x.csv", {}))
result("csv_all", pcall(core.writer, "csv", DIR .. "/x.csv", {fields = {"a"}, all_fields = true}))
result("fields_type", pcall(core.writer, "ndjson", nil, {fields = {"a", 2}}))
result("fields_dup", pcall(core.writer, "ndjson", nil, {fields = {"a", "a"}}))
result("null_type", pcall(core.writer, "ndjson", nil, {null = "NULL"}))
result("opts_type", pcall(core.writer, "ndjson", nil, 5))
local w = core.writer("ndjson", DIR .. "/out.ndjson", {})
result("record", pcall(w.write, w, "not a table"))
result("self", pcall(w.write, {}, {}))
w:close()
]])
            assert_ran(r)
            for name, text in pairs({ format = "invalid option 'xml'", csv_fields = "csv needs fields",
                csv_all = "all_fields is for json and ndjson", fields_type = "fields[2] must be a non-empty string",
                fields_dup = "field 'a' is listed twice", null_type = "null must be a light userdata",
                opts_type = "table expected", record = "table expected", self = "fleet.writer expected" }) do
                assert.is_false(r.results[name]["1"], name)
                assert.is_truthy(r.results[name]["2"]:find(text, 1, true), name .. ": " .. r.results[name]["2"])
            end
        end)
    end)

    describe("closing", function()
        it("a <close> variable left normally replaces the path; the collector leaves it as it was", function()
            local r = run([[
do
    local w <close> = core.writer("json", DIR .. "/scoped.json", {})
    w:write({a = 1})
end
local w = core.writer("ndjson", DIR .. "/collected.ndjson", {})
w:write({b = 2})
w = nil
collectgarbage()
collectgarbage()
]])
            assert_ran(r)
            assert.are.equal('[{"a":1}]\n', slurp(r.dir .. "/scoped.json"))
            assert.is_nil(gf.slurp(r.dir .. "/collected.ndjson"))
            assert.is_truthy(r.stderr:find("collected.ndjson was left as it was: its writer was never closed", 1, true),
                r.stderr)
        end)
    end)
end)
