-- The configuration loader (runtime/config.c), through the real binary:
-- `gitfleet config check --config FILE` exits 2 with one line
-- "gitfleet: error: FILE:LINE:COLUMN: message" on a bad file, and no secret placed
-- in the file, the environment or a token file ever reaches stdout or stderr.
--
-- GITFLEET_BIN is the binary (default ./gitfleet); GITFLEET_WRAPPER, when
-- set, prefixes each run (make valgrind). Run from the repository's root.

local gf = require("spec.support.gitfleet")

local FIXTURES = "spec/fixtures/config/"

-- Secrets planted in the fixtures, in the environment and in token files.
local FILE_SECRET = "ghp_SPECFILESECRET0123456789abcdefghijk"
local FILE_SECRET_2 = "ghp_SPECFILESECRET2123456789abcdefghijk"
local ENV_SECRET = "ghp_SPECENVSECRET0123456789abcdefghijk"
local TOKEN_FILE_SECRET = "ghp_SPECTOKENFILESECRET0123456789abcdef"
local SECRETS = { FILE_SECRET, FILE_SECRET_2, ENV_SECRET, TOKEN_FILE_SECRET, "SPECFILESECRET", "SPECENVSECRET" }

-- Writes a file, then gives it the mode (for chmod) if one is given.
local function spit(path, text, mode)
    gf.write(path, text)
    if mode then
        assert(os.execute("chmod " .. mode .. " " .. gf.quote(path)))
    end
end

-- Runs `gitfleet config check --config FILE`. env: extra variables; a value
-- of false unsets one. GITHUB_TOKEN always carries ENV_SECRET, and the
-- variable the fixtures use as "unset" is always unset.
local function check(config, env)
    local vars = { GITHUB_TOKEN = ENV_SECRET, GITFLEET_SPEC_UNSET_VARIABLE = false }
    for k, v in pairs(env or {}) do
        vars[k] = v
    end
    local unset = {}
    for k, v in pairs(vars) do
        if v == false then
            unset[#unset + 1] = k
            vars[k] = nil
        end
    end
    return gf.run({ "config", "check", "--config", config }, { env = vars, unset = unset })
end

local function assert_no_secret(r)
    for _, secret in ipairs(SECRETS) do
        assert.is_nil(r.stdout:find(secret, 1, true), "a secret reached stdout")
        assert.is_nil(r.stderr:find(secret, 1, true), "a secret reached stderr")
    end
end

-- The run failed with one error at file:line:column saying each of `says`.
local function assert_error(r, file, line, column, ...)
    assert_no_secret(r)
    assert.are.equal(2, r.code, "exit code; stderr: " .. r.stderr)
    local where = ("%s:%d:%d: "):format(file, line, column)
    assert.is_truthy(r.stderr:find("gitfleet: error: " .. where, 1, true),
        "expected '" .. where .. "' in stderr: " .. r.stderr)
    for _, text in ipairs({ ... }) do
        assert.is_truthy(r.stderr:find(text, 1, true), "expected '" .. text .. "' in stderr: " .. r.stderr)
    end
end

local function assert_fixture_error(name, line, column, ...)
    local file = FIXTURES .. name
    assert_error(check(file), file, line, column, ...)
end

local function assert_ok(r)
    assert_no_secret(r)
    assert.are.equal(0, r.code, "exit code; stderr: " .. r.stderr)
end

describe("config check #valgrind", function()
    teardown(gf.cleanup)

    describe("reports malformed YAML with libyaml's position", function()
        it("bad indentation", function()
            assert_fixture_error("bad_indent.yaml", 5, 4, "malformed YAML", "did not find expected key")
        end)

        it("a tab used for indentation", function()
            assert_fixture_error("tab_indent.yaml", 3, 1, "malformed YAML", "tabs are not allowed")
        end)

        it("an unclosed quote, with where the quote started", function()
            assert_fixture_error("unclosed_quote.yaml", 5, 1, "malformed YAML", "quoted scalar started at 3:14")
        end)
    end)

    describe("rejects keys outside the schema", function()
        it("at the top level, listing the sections", function()
            assert_fixture_error("unknown_key_top.yaml", 3, 1, "unknown key 'retries' at the top level",
                "allowed: providers, http, retry, cache, lua, plugins, log")
        end)

        it("in a section, listing its keys and guessing the intended one", function()
            assert_fixture_error("unknown_key_nested.yaml", 6, 3, "unknown key 'tiemout' in http",
                "max_connections", "did you mean 'timeout'?")
        end)

        it("in a token entry, without quoting the key (it may be a pasted token)", function()
            assert_fixture_error("unknown_key_token.yaml", 5, 22, "unknown key in a token entry of providers.github",
                "allowed: label, token, token_file, token_command, credential, timeout, username, account")
        end)

        it("a repeated key, with the first one's position", function()
            assert_fixture_error("duplicate_key.yaml", 4, 3, "duplicate key 'timeout' in http", "first at 2:3")
        end)
    end)

    describe("checks types", function()
        it("a quoted number is not a number", function()
            assert_fixture_error("wrong_type.yaml", 5, 12, "http.timeout: expected a number, found a quoted string")
        end)

        it("tokens must be a list", function()
            assert_fixture_error("wrong_type_tokens.yaml", 3, 13, "providers.github.tokens: expected a list")
        end)

        it("a quoted true is not a boolean", function()
            assert_fixture_error("quoted_bool.yaml", 2, 12, "cache.enabled: expected true or false")
        end)

        it("the top level must be a mapping", function()
            assert_fixture_error("not_a_mapping.yaml", 1, 1, "the top level must be a mapping")
        end)

        it("a bad size", function()
            assert_fixture_error("bad_size.yaml", 5, 13, "cache.max_size: expected a size", "MiB")
        end)

        it("a negative timeout", function()
            assert_fixture_error("negative_timeout.yaml", 4, 18, "http.timeout must not be negative")
        end)

        it("anchors and aliases are refused", function()
            assert_fixture_error("anchor.yaml", 3, 13, "anchors", "not supported")
        end)
    end)

    describe("tokens", function()
        it("an unset variable is named, never a value", function()
            assert_fixture_error("unset_variable.yaml", 5, 32,
                "environment variable GITFLEET_SPEC_UNSET_VARIABLE is not set")
        end)

        it("a missing token file is named, relative to the config file's directory", function()
            assert_fixture_error("missing_token_file.yaml", 4, 41,
                "cannot read token file " .. gf.capture("pwd") .. "/" .. FIXTURES .. "no-such-token-file")
        end)

        it("a duplicate label is reported at the second token", function()
            assert_fixture_error("duplicate_label.yaml", 6, 18, "duplicate token label in providers.github",
                "also used at 4:18")
        end)

        it("a duplicate label among 10,000 tokens is reported at the second, with the first's place", function()
            local lines = { "providers:", "  github:", "    tokens:" }
            for i = 1, 10000 do
                lines[#lines + 1] = ("      - { label: t%d, token: ghp_%036d }"):format(i, i)
            end
            lines[#lines + 1] = "      - { label: t4321, token: ghp_again }"
            local path = gf.write(gf.tmpdir() .. "/many.yaml", table.concat(lines, "\n") .. "\n")
            local r = gf.run({ "--config", path, "config", "check" })
            assert.are.equal(2, r.code, r.stderr)
            assert.matches("many.yaml:10004:18: duplicate token label in providers.github %(also used at 4324:18%)",
                r.stderr)
        end)
    end)

    describe("accepts", function()
        it("an empty file", function()
            assert_ok(check(FIXTURES .. "empty.yaml"))
        end)

        it("a file with only comments", function()
            assert_ok(check(FIXTURES .. "comments_only.yaml"))
        end)

        it("every section, with literal, environment and unset optional tokens", function()
            assert_ok(check(FIXTURES .. "valid.yaml"))
        end)

        it("the example configuration, with no variable set", function()
            assert_ok(check("config/gitfleet.example.yaml", {
                GITHUB_TOKEN = false, GITHUB_CI_TOKEN = false, GITLAB_TOKEN = false,
                BITBUCKET_APP_PASSWORD = false, CODEBERG_TOKEN = false, GHE_TOKEN = false,
            }))
        end)
    end)

    describe("with token files and expansion", function()
        local dir, config

        before_each(function()
            dir = gf.tmpdir()
            config = dir .. "/gitfleet.yaml"
        end)

        after_each(gf.cleanup)

        local function write_config(text)
            spit(config, text)
        end

        it("warns once about a token file readable by others, never printing the token", function()
            spit(dir .. "/shared.token", TOKEN_FILE_SECRET .. "\n", "644")
            write_config([[
providers:
  github:
    tokens:
      - { label: a, token_file: shared.token }
      - { label: b, token_file: ./shared.token }
]])
            local r = check(config)
            assert_ok(r)
            local path = dir .. "/shared.token"
            local warning = "gitfleet: warning: token file " .. path .. " is readable by others; run chmod 600 " .. path
            local first = r.stderr:find(warning, 1, true)
            assert.is_truthy(first, "expected the warning in: " .. r.stderr)
            assert.is_nil(r.stderr:find(warning, first + 1, true), "the warning came twice")
        end)

        it("does not warn about a chmod 600 token file", function()
            spit(dir .. "/private.token", TOKEN_FILE_SECRET .. "\r\n", "600")
            write_config("providers: { github: { tokens: [ { token_file: private.token } ] } }\n")
            local r = check(config)
            assert_ok(r)
            assert.is_nil(r.stderr:find("readable by others", 1, true))
        end)

        it("refuses an empty token file at its entry", function()
            spit(dir .. "/empty.token", "\n", "600")
            write_config("providers:\n  github:\n    tokens:\n      - token_file: empty.token\n")
            assert_error(check(config), config, 4, 21, "token file " .. dir .. "/empty.token is empty")
        end)

        it("${VAR:-default} uses the default when VAR is unset or empty, else VAR", function()
            spit(dir .. "/tok", TOKEN_FILE_SECRET .. "\n", "600")
            write_config('providers:\n  github:\n    tokens:\n      - token_file: "${GITFLEET_SPEC_DIR:-./default-dir}/tok"\n')
            local missing = "cannot read token file " .. dir .. "/default-dir/tok"
            assert_error(check(config, { GITFLEET_SPEC_DIR = false }), config, 4, 21, missing)
            assert_error(check(config, { GITFLEET_SPEC_DIR = "" }), config, 4, 21, missing)
            assert_ok(check(config, { GITFLEET_SPEC_DIR = dir }))
        end)

        it("skips a token that expands to nothing", function()
            write_config('providers:\n  github:\n    tokens: [ "${GITFLEET_SPEC_UNSET_VARIABLE:-}", "${GITHUB_TOKEN}" ]\n')
            assert_ok(check(config))
        end)

        it("$$ is a literal $", function()
            write_config('providers:\n  github:\n    tokens:\n      - token_file: "./a$$b"\n')
            assert_error(check(config), config, 4, 21, "cannot read token file " .. dir .. "/a$b:")
            spit(dir .. "/a$b", TOKEN_FILE_SECRET, "600")
            assert_ok(check(config))
        end)

        it("a lone $ is an error, without the value", function()
            write_config('providers:\n  github:\n    tokens: [ "' .. FILE_SECRET .. '$" ]\n')
            assert_error(check(config), config, 3, 15, "write $$ for a literal $")
        end)

        it("~ is $HOME in paths", function()
            local home = dir .. "/home"
            assert(os.execute("mkdir " .. gf.quote(home)))
            write_config("providers:\n  github:\n    tokens:\n      - token_file: ~/gh.token\n")
            assert_error(check(config, { HOME = home }), config, 4, 21, "cannot read token file " .. home .. "/gh.token:")
            spit(home .. "/gh.token", TOKEN_FILE_SECRET .. "\n", "600")
            assert_ok(check(config, { HOME = home }))
        end)
    end)
end)
