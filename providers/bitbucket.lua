-- Bitbucket Cloud (base_url https://api.bitbucket.org/2.0).
--
-- Auth: access tokens (repository, project or workspace access tokens, and
-- OAuth 2 tokens) go as "Authorization: Bearer TOKEN". App passwords (and
-- Atlassian API tokens, whose user name is the account's email) are HTTP
-- Basic: configure the token with `username:` and the host sends Basic
-- user:password itself — nothing changes here. Either way the host
-- attaches the credential; this file never sees a secret.
--
-- Budgets: Bitbucket counts a rolling hour per endpoint group, and sends
-- no remaining count and no reset time. Access tokens (only they) get
-- X-RateLimit-Limit and X-RateLimit-Resource (and X-RateLimit-NearLimit,
-- "true" under 20 % left, which the host does not read). A throttled
-- request gets 429 "Rate limit for this resource has been exceeded", with
-- no Retry-After: the host pauses the token (retry.secondary_wait, growing
-- on repeats). App passwords count per user, each access token on its own.
-- There is no endpoint that reports the budget: no rate_limit function.
--
-- Pagination: a JSON envelope {values, next, size, pagelen, page}; `next`
-- is followed as given, and when `size` is present the host fetches the
-- remaining pages concurrently. pagelen is at most 100.
local P = {
  title = "Bitbucket Cloud",
  base_url = "https://api.bitbucket.org/2.0",
  auth = { header = "Authorization", scheme = "Bearer" },
  budget = {
    limit = "X-RateLimit-Limit",
    resource = "X-RateLimit-Resource",
    default_resource = "api",
  },
  limits = {
    statuses = { 429 },
  },
  pagination = {
    style = "body", items = "values", next = "next", total = "size", page_size = "pagelen",
    page_param = "page",
  },
  headers = { ["Accept"] = "application/json" },
}

local util = require("fleet.plugin")
local v, esc, filtered, object = util.value, util.escape, util.filtered, util.object

local function is_fork(r) return v(r.parent) ~= nil end

-- opts.type -> Bitbucket's `role` (the caller's role on the repositories)
-- or `q` (a filter query), and a check here for what `q` may not cover.
local TYPES = {
  all = {},
  owner = { query = { role = "owner" } },
  admin = { query = { role = "admin" } },
  contributor = { query = { role = "contributor" } },
  member = { query = { role = "member" } },
  public = { query = { q = "is_private = false" }, keep = function(r) return v(r.is_private) == false end },
  private = { query = { q = "is_private = true" }, keep = function(r) return v(r.is_private) == true end },
  forks = { keep = is_fork },
  sources = { keep = function(r) return not is_fork(r) end },
}

-- The repositories of a workspace (owner = the workspace ID, its slug).
function P.repositories(api, owner, opts)
  local t = opts.type and TYPES[opts.type]
  if opts.type and not t then
    error(("bitbucket: unknown repository type '%s' (all, owner, admin, contributor, member, public, private, forks, sources)")
      :format(tostring(opts.type)), 0)
  end
  t = t or TYPES.all
  local query = { pagelen = 100 }
  for k, x in pairs(t.query or {}) do query[k] = x end
  local pages, err = api:pages("/repositories/" .. esc(owner), { query = query })
  if not pages then return nil, err end
  if t.keep then return filtered(pages, t.keep) end
  return pages
end

-- "https://user@bitbucket.org/w/r.git" -> "https://bitbucket.org/w/r.git":
-- Bitbucket puts the caller's username in https clone links.
local function clone_link(links, name)
  for _, c in ipairs(object(links and links.clone) or {}) do
    if type(c) == "table" and v(c.name) == name then
      local href = v(c.href)
      if name == "https" and type(href) == "string" then href = href:gsub("^(https?://)[^/@]+@", "%1") end
      return href
    end
  end
end

local function href(links, name)
  local l = links and object(links[name])
  return l and v(l.href)
end

-- Bitbucket has no stars, watchers count, forks count, issue count,
-- topics, archiving or push time: those are nil. Its language is a
-- lower-case setting ("python", "c++"), "" when unset (nil here). The
-- description is "" when there is none (Bitbucket never sends null).
-- name is the slug (the last part of full_name, the name in URLs).
-- What normalize_repository and the type filters read of a listed
-- repository: only these fields of each item are built when a page is
-- decoded (parent only as present or not).
P.repository_keys = {
  uuid = true, slug = true, name = true, full_name = true, workspace = { slug = true }, description = true,
  links = { html = true, clone = true }, mainbranch = { name = true }, language = true, is_private = true,
  parent = {}, created_on = true, updated_on = true,
}

function P.normalize_repository(r)
  r = object(r) or {} -- the host passes objects only; anything else reads as empty
  local links = object(r.links)
  local ws = object(r.workspace)
  local full_name = v(r.full_name)
  local private = v(r.is_private)
  local visibility
  if private ~= nil then visibility = private and "private" or "public" end
  local main = object(r.mainbranch)
  local language = v(r.language)
  if language == "" then language = nil end
  local owner = ws and v(ws.slug)
  if not owner and type(full_name) == "string" then owner = full_name:match("^([^/]+)/") end
  return {
    id = v(r.uuid),
    name = v(r.slug) or v(r.name),
    full_name = full_name,
    owner = owner,
    description = v(r.description),
    html_url = href(links, "html"),
    clone_url = clone_link(links, "https"),
    ssh_url = clone_link(links, "ssh"),
    default_branch = main and v(main.name),
    language = language,
    private = private,
    visibility = visibility,
    fork = is_fork(r),
    archived = nil,
    stargazers_count = nil,
    forks_count = nil,
    watchers_count = nil,
    open_issues_count = nil,
    topics = nil,
    created_at = v(r.created_on),
    updated_at = v(r.updated_on),
    pushed_at = nil,
  }
end

-- repo is the repository slug (or its {UUID}).
function P.repository_details(api, owner, repo)
  return api:get("/repositories/" .. esc(owner) .. "/" .. esc(repo))
end

-- Bitbucket Cloud has no contributors endpoint: no `contributors` here,
-- so fleet.fetch_contributors answers nil, err ("does not support").

function P.branches(api, owner, repo)
  return util.list(api, "/repositories/" .. esc(owner) .. "/" .. esc(repo) .. "/refs/branches",
    { query = { pagelen = 100 } }, function(b)
      local target = object(b.target)
      -- Protection is a separate setting (branch restrictions), not part
      -- of a branch: protected is nil.
      return { name = v(b.name), commit_sha = target and v(target.hash), protected = nil }
    end)
end

-- The email address needs another scope (/user/emails): nil here.
function P.user_info(api)
  local u, err = api:get("/user")
  if not u then return nil, err end
  local t = v(u.type)
  return { login = v(u.username) or v(u.nickname), id = v(u.uuid), name = v(u.display_name), email = nil,
    html_url = href(v(u.links), "html"), type = t == "user" and "User" or t, created_at = v(u.created_on) }
end

return P
