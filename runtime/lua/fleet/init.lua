-- The fleet module: the API scripts use. High-level calls are a few lines
-- over the C primitives in fleet.core and the provider plugins.
local core = require("fleet.core")
local json = require("cjson")
local Api = require("fleet.api")
local Apps = require("fleet.apps")
local records = require("fleet.records")

local fleet = {}

fleet.json = json
fleet.null = json.null
fleet.spawn = core.spawn
fleet.sleep = core.sleep
fleet.on = core.on
fleet.stats = core.stats
fleet.now = core.now
fleet.records = records
fleet.config = core.config

-- err = fleet.error(kind, message [, fields]): a structured error like the
-- ones the API returns (kind, message, and any fields given).
function fleet.error(kind, message, fields)
  local err = {}
  if fields then for k, v in pairs(fields) do err[k] = v end end
  err.kind, err.message = kind, message
  return core.error(err)
end

-- fleet.log(msg) logs at info; fleet.log.warn(msg), .error, .info, .debug.
local function log_at(level, ...)
  local parts = { ... }
  for i = 1, select("#", ...) do parts[i] = tostring(parts[i]) end
  core.log(level, table.concat(parts, " "))
end
fleet.log = setmetatable({}, { __call = function(_, ...) log_at("info", ...) end })
for _, level in ipairs({ "error", "warn", "info", "debug" }) do
  fleet.log[level] = function(...) log_at(level, ...) end
end

-- os.exit(code) ends the run cleanly (output flushed, cache closed): it
-- unwinds as an error the host recognises.
os.exit = function(code)
  if code == true or code == nil then code = 0 elseif code == false then code = 1 end
  error(setmetatable({ gitfleet_exit = math.tointeger(code) or 1 },
    { __tostring = function() return "os.exit(" .. tostring(code) .. ")" end }), 0)
end

---------------------------------------------------------------------------
-- Providers

local apis = {}     -- name -> Api
local infos         -- providers as the host loaded them

local function provider_infos()
  if not infos then infos = core.providers() end
  return infos
end

-- The provider used when none is named: the first configured one, else
-- github, else the first installed.
function fleet.default_provider()
  local list = provider_infos()
  for _, p in ipairs(list) do if p.configured then return p.name end end
  for _, p in ipairs(list) do if p.name == "github" then return p.name end end
  return list[1] and list[1].name
end

-- fleet.providers() -> { {name=, plugin=, title=, base_url=, file=, tokens=n}, ... }
function fleet.providers()
  local out = {}
  for i, p in ipairs(provider_infos()) do
    out[i] = { name = p.name, plugin = p.plugin, title = p.plugin_table.title, base_url = p.base_url,
      file = p.file, tokens = p.tokens, configured = p.configured }
  end
  return out
end

-- Where tokens of one account share a budget (budget.per_account), learn
-- each token's account once, in the background, where the provider can
-- tell and it matters (two or more tokens, no account configured).
-- The account is the plugin's account(api) if it has one, else the login
-- user_info gives.
local function account_of(api)
  if api.plugin.account then return api.plugin.account(api) end
  local user = api.plugin.user_info(api)
  return user and user.login
end

-- A token's account does not change, so what a lookup found is kept in the
-- cache under the credential's salted hash and trusted for a day without a
-- request; after that the lookup is made again, and the cache turns it into
-- a conditional request (a 304, which GitHub does not count).
local ACCOUNT_FRESH = 86400

-- Lookups run in a few background tasks, which take the tokens in turn:
-- with 10,000 tokens, 10,000 lookups queued at once would hold back every
-- request of the run behind them. The run does not wait for them either;
-- what one has not looked up yet is looked up by a later run.
local LOOKUPS_AT_ONCE = 4

local function look_up(api, label)
  -- a plugin that cannot tell leaves the token on a budget of its own
  local ok, account = pcall(account_of, api:with_token(label))
  if ok and type(account) == "string" then
    core.set_account(api.name, label, account)
    core.remember_account(api.name, label, account)
  end
end

local function learn_accounts(api)
  if not (api.plugin.account or api.plugin.user_info) then return end
  if not (api.plugin.budget and api.plugin.budget.per_account) then return end
  -- Apps' tokens have budgets of their own and no /user to ask
  local tokens = {}
  for _, t in ipairs(core.tokens(api.name)) do if t.kind == "token" then tokens[#tokens + 1] = t end end
  if #tokens < 2 then return end
  local todo = {}
  for _, t in ipairs(tokens) do
    if core.begin_account_lookup(api.name, t.label) then
      local known = core.recall_account(api.name, t.label, ACCOUNT_FRESH)
      if known then core.set_account(api.name, t.label, known) else todo[#todo + 1] = t.label end
    end
  end
  local next_one = 0
  for _ = 1, math.min(LOOKUPS_AT_ONCE, #todo) do
    core.spawn_background(function()
      while next_one < #todo do
        next_one = next_one + 1
        look_up(api, todo[next_one])
      end
    end)
  end
end

-- api = fleet.provider([name]): the API object of a provider instance.
function fleet.provider(name)
  name = name or fleet.default_provider()
  local api = apis[name]
  if api then return api end
  for _, p in ipairs(provider_infos()) do
    if p.name == name then
      api = Api.new(p)
      apis[name] = api
      if core.in_task() then learn_accounts(api) end
      return api
    end
  end
  error(("no provider named '%s' (see `gitfleet providers`)"):format(tostring(name)), 2)
end

-- A copy of the provider's API object for one call: what a plugin does to
-- the api it is given stays in that call (scripts and the host keep theirs).
local function api_for(opts)
  return fleet.provider(opts and opts.provider):with_token(opts and opts.token)
end

-- The API object for requests about owner: pinned to the GitHub App
-- installation that covers owner when there is one (fleet.apps), else as
-- api_for — the provider's other tokens.
local function api_for_owner(owner, opts)
  local api = api_for(opts)
  if not (opts and opts.token) and core.in_task() and Apps.any(api) then
    local label = Apps.token_for(api, owner)
    if label then api = api:with_token(label) end
  end
  return api
end

-- Calls a plugin function. A plugin that cannot read what its provider
-- sent raises; that costs this one call a decode error (naming the plugin
-- and, through the message, its file and line) instead of the whole run.
-- Errors that are not the plugin's own go on up: out of memory, os.exit,
-- and structured errors.
local function plugin_call(api, what, fn, ...)
  local res = table.pack(pcall(fn, ...))
  if res[1] then return table.unpack(res, 2, res.n) end
  local e = res[2]
  if type(e) ~= "string" or e == "not enough memory" then error(e, 0) end
  return nil, fleet.error("decode", ("the %s plugin could not read %s: %s"):format(api.name, what, e),
    { provider = api.name })
end

local function unsupported(api, what)
  return nil, fleet.error("http", ("provider %s does not support %s"):format(api.name, what),
    { provider = api.name })
end

---------------------------------------------------------------------------
-- Repositories

-- A function that normalises a page of provider objects into out[n+1..]
-- and returns the new n — or nil, err when the plugin cannot read one: a
-- provider sending something unexpected costs that owner, not the run.
local function page_normalizer(api, opts, owner)
  local normalize, name, raw = api.plugin.normalize_repository, api.name, opts and opts.raw
  local function each(items, out, n)
    for i = 1, #items do
      if type(items[i]) ~= "table" then error(("item %d of a page is not an object"):format(i), 0) end
      local rec = normalize(items[i], api)
      rec.provider = name
      if raw then rec.raw = items[i] end
      n = n + 1
      out[n] = rec
    end
    return n
  end
  return function(items, out, n)
    local ok, result = pcall(each, items, out, n)
    if ok then return result end
    return nil, fleet.error("decode", ("the %s plugin could not read a repository of %s: %s")
      :format(name, owner, tostring(result)), { provider = name, owner = owner })
  end
end

-- nil, err when an owner or repository name cannot be placed in an API
-- path ("", ".", "..", a space or a control character: fleet.owners).
local function invalid_name(api, what, name)
  local problem = require("fleet.owners").name_problem(name)
  if not problem then return nil end
  return fleet.error("invalid", ("%s %q: %s"):format(what, name, problem), { provider = api.name })
end

-- The API object that lists owner's repositories, or nil, err for a name
-- that cannot be placed in a path.
local function repositories_api(owner, opts)
  local api = api_for_owner(owner, opts)
  local bad = invalid_name(api, "owner", owner)
  if bad then return nil, bad end
  -- Pages build only the fields the plugin's normaliser reads, unless the
  -- caller wants the provider's whole object.
  if api.plugin.repository_keys and not (opts and opts.raw) then api = api:with_keep(api.plugin.repository_keys) end
  return api
end

local function open_repositories(owner, opts)
  if type(owner) ~= "string" or owner == "" then
    error("bad argument #1 (owner must be a non-empty string)", 3)
  end
  local api, bad = repositories_api(owner, opts)
  if not api then return nil, bad end
  -- A plugin that returns a bare message, or something that is not pages,
  -- costs that owner, with its reason. One that raises raises here, as an
  -- argument error of the caller's (an unknown opts.type) must: fetch and
  -- the worker catch it for that owner.
  local pages, err = api.plugin.repositories(api, owner, opts or {})
  if pages and (type(pages) ~= "table" or type(pages.next) ~= "function") then
    pages, err = nil, ("repositories() returned a %s, not pages"):format(type(pages))
  elseif not pages and err == nil then
    err = "repositories() returned neither pages nor an error"
  end
  if not pages then
    if type(err) ~= "table" then
      err = fleet.error("decode", ("the %s plugin could not read the repositories of %s: %s"):format(api.name, owner,
        tostring(err)), { provider = api.name })
    end
    err.owner = err.owner or owner
    err.provider = err.provider or api.name
    return nil, err
  end
  return pages, page_normalizer(api, opts, owner)
end

-- The pages of owner's repositories at a page URL another process found
-- (a large owner's pages shared between workers, fleet/share.lua): no
-- first request; the same API object, fields kept and normaliser as
-- open_repositories; page_opts: what the first process's pages sent with
-- each request. nil, err when the URL is not the provider's.
local function open_repositories_at(owner, opts, template, last, page_opts)
  local api, bad = repositories_api(owner, opts)
  if not api then return nil, bad end
  -- The URL came through Redis: a request there carries a token, so it
  -- must be the provider's own.
  if type(template) ~= "string" or template:sub(1, #api.base_url + 1) ~= api.base_url .. "/" then
    return nil, fleet.error("invalid", ("a shared page URL outside %s"):format(api.base_url), { provider = api.name })
  end
  return require("fleet.pages").at(api, template, last, page_opts), page_normalizer(api, opts, owner)
end

-- For the host's own commands (the worker), not scripts: pages opened by
-- hand.
package.loaded["fleet.repositories"] = { open = open_repositories, open_at = open_repositories_at }

-- The next page of records: an array, nil at the end, or raises the err.
local function next_page(pages, normalize, owner)
  local items, err = pages:next()
  if not items then
    if err then
      err.owner = err.owner or owner
      error(err, 0)
    end
    return nil
  end
  local out = {}
  local n, nerr = normalize(items, out, 0)
  if not n then error(nerr, 0) end
  return out
end

-- records, err = fleet.fetch_repositories(owner [, opts])
-- opts: provider, type (the provider's filter), raw (keep the provider's object)
function fleet.fetch_repositories(owner, opts)
  local pages, normalize = open_repositories(owner, opts)
  if not pages then return nil, normalize end
  local out, n = {}, 0
  while true do
    local items, err = pages:next()
    if not items then
      if err then
        err.owner = err.owner or owner
        return nil, err
      end
      return out
    end
    n, err = normalize(items, out, n)
    if not n then return nil, err end
  end
end

-- for repo in fleet.each_repository(owner [, opts]) do ... end
-- Fetches page by page, so memory stays bounded. Returns nil, err if the
-- first page fails; a later failure is raised from the loop (its error is
-- the structured err).
function fleet.each_repository(owner, opts)
  local pages, normalize = open_repositories(owner, opts)
  if not pages then return nil, normalize end
  local page, i = {}, 0
  return function()
    i = i + 1
    while i > #page do
      page = next_page(pages, normalize, owner)
      if not page then return nil end
      i = 1
    end
    return page[i]
  end
end

-- fleet.each_repository_page(owner [, opts]) -> iterator of arrays of
-- records, for writers that take a page at a time.
function fleet.each_repository_page(owner, opts)
  local pages, normalize = open_repositories(owner, opts)
  if not pages then return nil, normalize end
  return function() return next_page(pages, normalize, owner) end
end

-- record, err = fleet.fetch_repository_details(owner, repo [, opts])
function fleet.fetch_repository_details(owner, repo, opts)
  local api = api_for_owner(owner, opts)
  if not api.plugin.repository_details then return unsupported(api, "repository details") end
  local bad = invalid_name(api, "owner", tostring(owner)) or invalid_name(api, "repository", tostring(repo))
  if bad then return nil, bad end
  local what = ("repository %s/%s"):format(tostring(owner), tostring(repo))
  local raw, err = plugin_call(api, what, api.plugin.repository_details, api, owner, repo, opts or {})
  if not raw then return nil, err end
  local rec
  rec, err = plugin_call(api, what, function()
    if type(raw) ~= "table" then error("the repository is not an object", 0) end
    return api.plugin.normalize_repository(raw, api, true)
  end)
  if not rec then return nil, err end
  rec.provider = api.name
  if opts and opts.raw then rec.raw = raw end
  return rec
end

local function list_call(field, what)
  return function(owner, repo, opts)
    local api = api_for_owner(owner, opts)
    local fn = api.plugin[field]
    if not fn then return unsupported(api, what) end
    local bad = invalid_name(api, "owner", tostring(owner)) or invalid_name(api, "repository", tostring(repo))
    if bad then return nil, bad end
    local list, err = plugin_call(api, ("the %s of %s/%s"):format(what, tostring(owner), tostring(repo)),
      fn, api, owner, repo, opts or {})
    if not list then return nil, err end
    for _, rec in ipairs(list) do rec.provider = api.name end
    return list
  end
end

-- list, err = fleet.fetch_contributors(owner, repo [, opts]) -- all pages
fleet.fetch_contributors = list_call("contributors", "contributors")
-- list, err = fleet.fetch_branches(owner, repo [, opts]) -- all pages
fleet.fetch_branches = list_call("branches", "branches")

---------------------------------------------------------------------------
-- Accounts and budgets

-- user, err = fleet.fetch_user_info([provider]): the authenticated account.
function fleet.fetch_user_info(provider, opts)
  local api = api_for({ provider = provider, token = opts and opts.token })
  if not api.plugin.user_info then return unsupported(api, "user info") end
  local user, err = plugin_call(api, "the user", api.plugin.user_info, api)
  if not user then return nil, err end
  user.provider = api.name
  return user
end

-- Runs fn(item) for every item concurrently; results in input order.
-- results, errors = fleet.map(list, fn [, {concurrency = n}])
-- results[i] is fn's first result; errors[i] its error (a raised error,
-- with traceback, or the err of a `nil, err` return). errors is nil when
-- every call succeeded.
function fleet.map(list, fn, opts)
  local n = #list
  local limit = math.max(1, math.min(opts and opts.concurrency or 16, n))
  local results, errors, failed = { n = n }, {}, false
  local next_index = 1
  local function handler(e)
    if type(e) == "table" then
      if e.traceback == nil and getmetatable(e) ~= nil then e.traceback = debug.traceback(nil, 2) end
      return e
    end
    return debug.traceback(tostring(e), 2)
  end
  local function worker()
    while next_index <= n do
      local i = next_index
      next_index = i + 1
      local ok, r, e = xpcall(fn, handler, list[i], i)
      if not ok then
        errors[i], failed = r, true
      else
        results[i] = r
        if r == nil and e ~= nil then errors[i], failed = e, true end
      end
    end
  end
  local workers = {}
  for w = 1, limit do workers[w] = core.spawn(worker) end
  for w = 1, limit do workers[w]:wait() end
  return results, failed and errors or nil
end

-- rows = fleet.rate_limit([provider]): one row per token and resource.
-- Refreshed from the provider's rate-limit endpoint where it has one (free
-- of quota on GitHub); otherwise what responses have taught the host.
function fleet.rate_limit(provider)
  local names = {}
  if provider then
    names[1] = provider
  else
    for _, p in ipairs(provider_infos()) do names[#names + 1] = p.name end
  end
  local jobs = {}
  for _, name in ipairs(names) do
    local api = fleet.provider(name)
    if core.in_task() and Apps.any(api) then Apps.start(api) end -- its installations become tokens
    if api.plugin.rate_limit then
      for _, t in ipairs(core.tokens(name)) do
        -- an App's JWT has no /rate_limit; its installations do
        if not t.disabled and t.kind ~= "app" then jobs[#jobs + 1] = { api = api, label = t.label } end
      end
    end
  end
  local _, failed = fleet.map(jobs, function(job)
    local budgets, err = job.api.plugin.rate_limit(job.api:with_token(job.label))
    if not budgets then return nil, err end
    for _, b in ipairs(budgets) do core.observe_budget(job.api.name, job.label, b) end
    return true
  end)
  -- A refresh that failed leaves that token's rows as responses taught
  -- them; say so rather than show them as fresh.
  for i, err in pairs(failed or {}) do
    local text = type(err) == "table" and (err.message or err.kind) or err
    core.log("warn", ("%s: the budgets of token %s could not be refreshed: %s"):format(jobs[i].api.name,
      jobs[i].label, tostring(text):match("^[^\n]*")))
  end
  local rows = {}
  for _, name in ipairs(names) do
    for _, row in ipairs(core.budgets(name)) do rows[#rows + 1] = row end
  end
  return rows
end

-- list = fleet.validate_credentials([provider]): for each token, whether
-- the provider accepts it and whose it is.
function fleet.validate_credentials(provider)
  local api = fleet.provider(provider)
  local tokens = {}
  for _, t in ipairs(core.tokens(api.name)) do if t.kind == "token" then tokens[#tokens + 1] = t end end
  local out = fleet.map(tokens, function(t)
    local row = { token = t.label, provider = api.name, anonymous = t.anonymous }
    if not api.plugin.user_info then
      row.valid, row.error = nil, "the provider plugin cannot check credentials"
      return row
    end
    local user, err = plugin_call(api, "the user", api.plugin.user_info, api:with_token(t.label))
    row.valid = user ~= nil
    if user then
      row.account = user.login
      if not t.anonymous and type(user.login) == "string" then
        core.set_account(api.name, t.label, user.login)
        core.remember_account(api.name, t.label, user.login)
      end
    else
      row.error = tostring(err)
      row.kind = err and err.kind
    end
    return row
  end)
  out.n = nil -- a plain list (it encodes as a JSON array)
  return out
end

---------------------------------------------------------------------------
-- Any endpoint

-- resp, err = fleet.request(method, path [, opts]); resp.data is the
-- decoded JSON (resp.body the text when the response is not JSON).
-- opts: provider, token, query, headers, body, ok_status.
function fleet.request(method, path, opts)
  local o = { decode = true }
  for k, v in pairs(opts or {}) do o[k] = v end
  return api_for(o):request(method, path, o)
end

-- items, err = fleet.paginate(path [, opts]): every item of every page.
-- opts.items names the field holding a page's items where the provider
-- wraps them (Bitbucket: "values").
function fleet.paginate(path, opts)
  return api_for(opts):collect(path, opts)
end

-- pages, err = fleet.pages(path [, opts]): page by page; pages:next().
function fleet.pages(path, opts)
  return api_for(opts):pages(path, opts)
end

---------------------------------------------------------------------------
-- Output

local formats = { ndjson = true, json = true, csv = true }

-- w = fleet.writer({format=, output=, fields=}): a streaming writer with
-- w:write(record), w:write_many(records), w:close(). output nil or "-" is
-- stdout. fields default to the repository fields.
function fleet.writer(opts)
  opts = opts or {}
  local format = opts.format or "ndjson"
  if not formats[format] then error("bad format '" .. tostring(format) .. "' (ndjson, json or csv)", 2) end
  return core.writer(format, opts.output, {
    fields = opts.fields or records.repository_fields,
    all_fields = opts.all_fields ~= false and format ~= "csv",
    null = json.null,
    -- w:close() renames without waiting for the disk; the caller then
    -- syncs many files at once (fleet.core.sync_written; gitfleet worker)
    sync_later = opts.sync_later,
  })
end

-- ok, err = fleet.write(records, opts): all records at once. A path is
-- replaced only when every record was written; else it is left as it was.
function fleet.write(list, opts)
  local w, werr = fleet.writer(opts)
  if not w then return nil, werr end
  local ok, err = w:write_many(list)
  if not ok then
    w:discard()
    return nil, err
  end
  local closed, cerr = w:close()
  if not closed then return nil, cerr end
  return true
end

-- q = fleet.queue(name): a work queue shared through Redis (shared:); see
-- fleet/queue.lua and docs/scripting.md.
function fleet.queue(name) return require("fleet.queue").open(name) end

return fleet
