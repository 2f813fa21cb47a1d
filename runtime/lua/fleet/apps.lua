-- GitHub Apps: which installations an app has, which owner each covers,
-- and keeping their tokens fresh. The secrets stay in C (runtime/apps.c):
-- this module sees labels, ids, account logins and expiry times only.
--
-- An app's own calls (listing installations, creating installation
-- tokens) are made on the app's JWT token with the resource "app", so they
-- never draw on an installation's budget. A request for an owner goes to
-- the installation that covers that owner (fleet.init's api_for_owner);
-- an owner no installation covers goes to the provider's other tokens.
local core = require("fleet.core")
local Api = require("fleet.api")

local Apps = {}

local states = {} -- provider name -> { ready = handle | true, by_owner = {}, by_label = {} }

-- How long before expiry a token is replaced: a few minutes for GitHub's
-- one-hour tokens, a quarter of the lifetime for short ones.
local function margin(inst)
  return math.min(300, math.max(1, (inst.expires_at - inst.obtained_at) / 4))
end

local function disable(api, app, err)
  core.app_disable(api.name, app.label, tostring(err))
  app.disabled = true
end

-- A rejected JWT (401) disables the app: its key is wrong or revoked.
local function app_call_failed(api, app, err)
  -- the host disables a token refused with 401 and says why in err.kind
  if err and (err.status == 401 or err.kind == "auth") then
    disable(api, app, "GitHub refused its JWT (401): the private key does not belong to the app, or the app id is wrong")
  end
  return nil, err
end

local function sign(api, app)
  local ok, problem = core.app_sign(api.name, app.label)
  if not ok then
    disable(api, app, problem)
    return nil, problem
  end
  return true
end

-- Takes a new installation token into C. Failures that are not the key's
-- (a 5xx that outlasted the retries) are tried again with backoff.
local function take_token(api, app, inst)
  local err
  for attempt = 1, 4 do
    if app.disabled or not sign(api, app) then return nil, err end
    local resp
    resp, err = api:with_token(app.label):request("POST", "/app/installations/" .. inst.id .. "/access_tokens",
      { resource = "app", secret_for = inst.label })
    if resp then
      inst.obtained_at, inst.expires_at = core.now(), resp.expires_at
      return true
    end
    if err.kind == "auth" or err.status == 401 then return app_call_failed(api, app, err) end
    if err.status == 403 or err.status == 404 or err.status == 422 then break end -- not for this app to fix
    core.sleep(math.min(8, 0.5 * 2 ^ (attempt - 1)))
  end
  core.log("warn", ("app %s: could not renew the token of installation %s: %s"):format(app.label, inst.label,
    tostring(err)))
  return nil, err
end

local function wanted(app, row)
  if app.auto then return true end
  local login = row.account and row.account.login
  for _, want in ipairs(app.installations) do
    if tostring(row.id) == want or (login and login:lower() == want:lower()) then return true end
  end
  return false
end

-- Lists the app's installations (all pages) and gets a token for each one
-- it is to use.
local function start_app(api, state, app)
  if app.disabled or not sign(api, app) then return end
  local rows, err = api:with_token(app.label):collect("/app/installations",
    { query = { per_page = 100 }, resource = "app", cache = false })
  if not rows then return app_call_failed(api, app, err) end
  local found = {}
  for _, row in ipairs(rows) do
    local login = type(row.account) == "table" and type(row.account.login) == "string" and row.account.login
    if login and row.id ~= nil and wanted(app, row) then
      local label, problem = core.app_add_installation(api.name, app.label, tostring(row.id), login)
      if not label then
        core.log("warn", problem)
        break
      end
      local inst = { label = label, id = tostring(row.id), account = login, app = app, expires_at = 0,
        obtained_at = 0 }
      found[#found + 1] = inst
      found[tostring(row.id)], found[login:lower()] = true, true
    end
  end
  for _, want in ipairs(app.auto and {} or app.installations) do
    if not found[want] and not found[want:lower()] then
      core.log("warn", ("app %s: no installation %s among the app's installations"):format(app.label, want))
    end
  end
  local tasks = {}
  for _, inst in ipairs(found) do
    tasks[#tasks + 1] = core.spawn(function()
      if take_token(api, app, inst) then
        state.by_label[inst.label] = inst
        local key = inst.account:lower()
        if not state.by_owner[key] then state.by_owner[key] = inst end
      end
    end)
  end
  for _, t in ipairs(tasks) do t:wait() end
end

local function state_of(api)
  local state = states[api.name]
  if state then
    if state.ready ~= true then state.ready:wait() end
    return state
  end
  state = { by_owner = {}, by_label = {}, refreshing = {} }
  states[api.name] = state
  local apps = core.apps(api.name)
  if #apps == 0 then
    state.ready = true
    return state
  end
  state.ready = core.spawn(function()
    local tasks = {}
    for _, app in ipairs(apps) do tasks[#tasks + 1] = core.spawn(start_app, api, state, app) end
    for _, t in ipairs(tasks) do t:wait() end
  end)
  state.ready:wait()
  state.ready = true
  return state
end

-- When a request submitted now could go out on the installation's token:
-- now, or after its budget resets when it is spent (plus the pool's
-- margin for clock skew), since the request waits in the pool till then.
local function sendable_at(api, inst)
  local at = core.now()
  for _, row in ipairs(core.budgets(api.name)) do
    if row.token == inst.label and row.remaining == 0 and row.reset then
      at = math.max(at, row.reset + core.config().retry.reset_margin)
    end
  end
  return at
end

-- Makes sure an installation's token still has more than its margin to
-- live when a request submitted now can go out on it (a token that
-- expired while the request waited for the budget would be refused);
-- one renewal at a time per installation.
local function prepare(api, label, force)
  local state = states[api.name]
  local inst = state and state.by_label[label]
  if not inst or inst.app.disabled then return end
  if not force and sendable_at(api, inst) < inst.expires_at - margin(inst) then return end
  local pending = state.refreshing[label]
  if not pending then
    pending = core.spawn(function()
      take_token(api, inst.app, inst)
      state.refreshing[label] = nil
    end)
    state.refreshing[label] = pending
  end
  pending:wait()
end

-- The label of the installation token for owner's requests, or nil when
-- no (working) installation covers the owner.
function Apps.token_for(api, owner)
  if type(owner) ~= "string" then return nil end
  local state = state_of(api)
  local inst = state.by_owner[owner:lower()]
  if not inst or inst.app.disabled then return nil end
  prepare(api, inst.label)
  if inst.app.disabled or core.now() >= inst.expires_at then return nil end
  return inst.label
end

-- Lists the provider's apps' installations and gets their tokens, once.
function Apps.start(api)
  state_of(api)
end

-- Whether the provider has apps at all (so that callers skip the rest).
function Apps.any(api)
  local state = states[api.name]
  if state then return next(state.by_label) ~= nil or state.ready ~= true end
  return #core.apps(api.name) > 0
end

Api.prepare_token = function(api, label)
  local state = states[api.name]
  if state and state.by_label[label] then prepare(api, label) end
end

-- A request refused (401) on an installation token: the token expired
-- while the request waited, or a request sent with the old token was
-- refused after a renewal (and the host disabled the new one). Renews the
-- token when it is disabled or expiring; true when the request may be made
-- again (once).
Api.renew_refused = function(api, label, err)
  local state = states[api.name]
  local inst = state and state.by_label[label]
  if not inst or inst.app.disabled or err.kind ~= "auth" then return false end
  local disabled = false
  for _, t in ipairs(core.tokens(api.name)) do
    if t.label == label then disabled = t.disabled end
  end
  if not disabled and core.now() < inst.expires_at - margin(inst) then return true end -- renewed meanwhile
  local before = inst.expires_at
  prepare(api, label, true)
  return not inst.app.disabled and inst.expires_at > before
end

return Apps
