-- The JSON decoder (runtime/json.c): JSON's grammar, integers, null, and
-- keep sets that build only what normalisation reads — checked against a
-- full decode on every provider.
local emulator = require("spec.support.emulator")
local gf = require("spec.support.gitfleet")

describe("json decoding #valgrind", function()
  after_each(function()
    emulator.stop_all()
    gf.cleanup()
  end)

  it("decodes JSON's grammar, keeps integers whole, and refuses what is not JSON", function()
    local r = gf.run_script([==[
      local core = require("fleet.core")
      local cjson = require("cjson")
      local v = core.decode([[ [{"id":12345678901234,"f":1.5e3,"s":"a\u00e9\ud83d\ude00\n","n":null,"t":true,"e":[],"o":{}}] ]])
      local o = v[1]
      print(math.type(o.id), o.id, math.type(o.f), o.f, o.s == "aé😀\n", o.n == cjson.null, o.t, #o.e, next(o.o))
      print(core.decode([["\ud800 lone"]]) == "\u{FFFD} lone")
      for _, bad in ipairs({ "[1,2", '{"a":1} x', "[01]", "[1.]", '{"a" 1}', "[tru]", '"open', "", "{'a':1}" }) do
        local value, err = core.decode(bad)
        io.write(value == nil and err:match("^offset %d+: ") and "refused " or ("ACCEPTED " .. bad .. " "))
      end
      print()
      print(select(2, core.decode(("["):rep(5000) .. ("]"):rep(5000))))
      -- keys with escapes, decoded in full and through a keep set
      local k = core.decode([[{"a\/b":1,"c\u00e9":2,"x":3}]])
      local kept = core.decode([[{"v":[{"a\/b":1,"c\u00e9":2,"x":3}]}]], "v", { ["a/b"] = true, x = true })
      print(k["a/b"], k["cé"], k.x, k[""], kept.v[1]["a/b"], kept.v[1]["cé"], kept.v[1].x)
    ]==])
    assert.are.equal(0, r.code, r.stderr)
    local lines = {}
    for l in r.stdout:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.are.equal("integer\t12345678901234\tfloat\t1500.0\ttrue\ttrue\ttrue\t0\tnil", lines[1])
    assert.are.equal("true", lines[2])
    assert.are.equal(("refused "):rep(9), lines[3])
    assert.matches("nested too deep", lines[4])
    assert.are.equal("1\t2\t3\tnil\t1\tnil\t3", lines[5])
  end)

  it("builds only the kept fields of a page's items, and everything around them", function()
    local r = gf.run_script([==[
      local core = require("fleet.core")
      local page = core.decode('{"size":3,"next":"u","values":[{"a":1,"b":{"c":2,"d":3},"x":[1,{"y":2}]}]}', "values",
        { a = true, b = { c = true } })
      local item = page.values[1]
      print(page.size, page.next, item.a, item.b.c, item.b.d, item.x)
    ]==])
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("3\tu\t1\t2\tnil\tnil\n", r.stdout)
  end)

  it("keeps every field each provider's normaliser reads (same records as a full decode)", function()
    local emu = emulator.start({ scenario = {
      owners = { { name = "acme", kind = "org", repos = 130, subgroups = { { name = "tools", repos = 7 } } },
        { name = "ada", kind = "user", repos = 30 } },
      tokens = {
        { token = "ghp_JSONxxxxxxxxxxxxxxxxxxxx", provider = "github", account = "ada" },
        { token = "glpat-JSONxxxxxxxxxxxxxxxxx", provider = "gitlab", account = "ada" },
        { token = "bbat-JSONxxxxxxxxxxxxxxxxxx", provider = "bitbucket", account = "ada" },
        { token = "gitea-JSONxxxxxxxxxxxxxxxxx", provider = "gitea", account = "ada" },
      },
    } })
    local cfg = gf.config({ providers = {
      github = { base_url = emu.url, tokens = { "ghp_JSONxxxxxxxxxxxxxxxxxxxx" } },
      gitlab = { base_url = emu.url .. "/api/v4", tokens = { "glpat-JSONxxxxxxxxxxxxxxxxx" } },
      bitbucket = { base_url = emu.url .. "/2.0", tokens = { "bbat-JSONxxxxxxxxxxxxxxxxxx" } },
      gitea = { base_url = emu.url .. "/api/v1", tokens = { "gitea-JSONxxxxxxxxxxxxxxxxx" } },
    }, cache = { enabled = false } })
    local r = gf.run_script([==[
      local json = fleet.json
      for _, p in ipairs({ "github", "gitlab", "bitbucket", "gitea" }) do
        for _, owner in ipairs({ "acme", "ada" }) do
          for _, type in ipairs({ "all", "forks", "sources" }) do
            local opts = { provider = p, type = type ~= "all" and type or nil }
            local lean = assert(fleet.fetch_repositories(owner, opts))
            opts.raw = true
            local full = assert(fleet.fetch_repositories(owner, opts))
            assert(#lean == #full and #lean > 0, p .. " " .. owner .. " " .. type .. ": counts differ")
            for i = 1, #lean do
              full[i].raw = nil
              for k in pairs(full[i]) do
                if lean[i][k] == nil then error(("%s %s %s: record %d lacks %s"):format(p, owner, type, i, k)) end
              end
              for k, value in pairs(lean[i]) do
                local a, b = json.encode({ value }), json.encode({ full[i][k] })
                if a ~= b then error(("%s %s %s: record %d: %s is %s, not %s"):format(p, owner, type, i, k, a, b)) end
              end
            end
          end
        end
      end
      print("same")
    ]==], cfg)
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("same\n", r.stdout)
  end)
end)
