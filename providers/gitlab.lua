-- GitLab: gitlab.com and self-managed instances (base_url https://HOST/api/v4).
--
-- Auth: "Authorization: Bearer TOKEN". GitLab accepts every kind of token
-- that way: personal, project and group access tokens, and OAuth 2 tokens.
-- The host attaches it; this file never sees a secret.
--
-- Budgets: every response carries RateLimit-Limit (per minute),
-- RateLimit-Remaining and RateLimit-Reset (Unix time) for the most
-- restrictive throttle. RateLimit-Observed is a count of requests, not a
-- "used" figure of the same window, so it is not read. A throttled request
-- gets 429, often with Retry-After; GitLab.com's Projects, Groups and Users
-- API limits send 429 + Retry-After with no RateLimit-* headers at all, and
-- the host then pauses the token. GitLab has no endpoint that reports the
-- budget, so there is no rate_limit function: the host shows what response
-- headers taught it.
--
-- Pagination: offset pages with a Link header (rel="last" while the total
-- is at most 10,000 records) and x-total-pages; per_page at most 100.
local P = {
  title = "GitLab",
  base_url = "https://gitlab.com/api/v4",
  auth = { header = "Authorization", scheme = "Bearer" },
  budget = {
    limit = "RateLimit-Limit",
    remaining = "RateLimit-Remaining",
    reset = "RateLimit-Reset",
    reset_kind = "epoch",
    default_resource = "api",
    -- GitLab's limits are per user: a user's tokens share them
    per_account = true,
  },
  limits = {
    statuses = { 429 },
  },
  pagination = { style = "link", page_param = "page", total_pages_header = "x-total-pages" },
  headers = { ["Accept"] = "application/json" },
}

local util = require("fleet.plugin")
local v, esc, filtered, object = util.value, util.escape, util.filtered, util.object

local function is_fork(r)
  return v(r.forked_from_project) ~= nil
end

-- opts.type -> query parameters GitLab understands, or a filter applied
-- here where GitLab has none ("forks", "sources"). Group and user listings
-- differ for "member": a user's takes membership=true, a group's takes
-- min_access_level=10 (Guest: projects the caller is a member of).
local TYPES = {
  all = {},
  owner = { query = { owned = "true" } },
  member = { group = { min_access_level = 10 }, user = { membership = "true" } },
  public = { query = { visibility = "public" } },
  private = { query = { visibility = "private" } },
  internal = { query = { visibility = "internal" } },
  forks = { keep = is_fork },
  sources = { keep = function(r) return not is_fork(r) end },
}

local function merged(...)
  local out = {}
  for i = 1, select("#", ...) do
    for k, x in pairs(select(i, ...) or {}) do out[k] = x end
  end
  return out
end

-- A group's projects, its subgroups' included (and not the projects other
-- groups share with it: with_shared=false); else (404) a user's. GitLab
-- answers /groups/:id/projects for any group path and 404 for a name that
-- is not a group, so one request settles which it is.
function P.repositories(api, owner, opts)
  local t = opts.type and TYPES[opts.type]
  if opts.type and not t then
    error(("gitlab: unknown repository type '%s' (all, owner, member, public, private, internal, forks, sources)")
      :format(tostring(opts.type)), 0)
  end
  t = t or TYPES.all
  local base = { per_page = 100 }
  local pages, err = api:owner_pages(owner, "/groups/" .. esc(owner) .. "/projects",
    { query = merged(base, { include_subgroups = "true", with_shared = "false" }, t.query, t.group) },
    "/users/" .. esc(owner) .. "/projects", { query = merged(base, t.query, t.user) })
  if not pages then return nil, err end
  if t.keep then return filtered(pages, t.keep) end
  return pages
end

-- The project's most used language, where a details call fetched it.
local function main_language(languages)
  local best, share = nil, -1
  for name, pct in pairs(object(languages) or {}) do
    if type(name) == "string" and type(pct) == "number"
        and (pct > share or (pct == share and (best == nil or name < best))) then
      best, share = name, pct
    end
  end
  return best
end

-- GitLab lists carry no language and no push time: language is nil there
-- (details fetch it from /languages), pushed_at is always nil
-- (last_activity_at also counts issues and merge requests; it is in raw).
-- Watchers do not exist on GitLab. open_issues_count is absent when the
-- project's issues are off.
-- What normalize_repository and the type filters read of a listed
-- project: only these fields of each item are built when a page is decoded
-- (forked_from_project only as present or not).
P.repository_keys = {
  id = true, path = true, name = true, path_with_namespace = true, namespace = { full_path = true },
  description = true, web_url = true, http_url_to_repo = true, ssh_url_to_repo = true, default_branch = true,
  _gitfleet_languages = true, visibility = true, archived = true, forked_from_project = {}, star_count = true,
  forks_count = true, open_issues_count = true, topics = true, tag_list = true, created_at = true,
  updated_at = true,
}

function P.normalize_repository(r)
  r = object(r) or {} -- the host passes objects only; anything else reads as empty
  local ns = object(r.namespace)
  local visibility = v(r.visibility)
  local private
  if visibility then private = visibility ~= "public" end
  local topics = v(r.topics) or v(r.tag_list)
  -- GitLab shows forked_from_project on full project objects (those with
  -- "archived"), and only when the caller may read the upstream project.
  local fork
  if v(r.archived) ~= nil then fork = is_fork(r) end
  return {
    id = v(r.id),
    name = v(r.path) or v(r.name), -- the URL name, as in full_name (r.name is a display name)
    full_name = v(r.path_with_namespace),
    owner = ns and v(ns.full_path),
    description = v(r.description),
    html_url = v(r.web_url),
    clone_url = v(r.http_url_to_repo),
    ssh_url = v(r.ssh_url_to_repo),
    default_branch = v(r.default_branch),
    language = main_language(v(r._gitfleet_languages)),
    private = private,
    visibility = visibility,
    fork = fork,
    archived = v(r.archived),
    stargazers_count = v(r.star_count),
    forks_count = v(r.forks_count),
    watchers_count = nil,
    open_issues_count = v(r.open_issues_count),
    topics = topics,
    created_at = v(r.created_at),
    updated_at = v(r.updated_at),
    pushed_at = nil,
  }
end

local function project_id(owner, repo)
  return esc(owner .. "/" .. repo)
end

-- The project, with its languages (one more request) so that the record's
-- language is known.
function P.repository_details(api, owner, repo)
  local id = project_id(owner, repo)
  local project, err = api:get("/projects/" .. id)
  if not project then return nil, err end
  local languages = api:get("/projects/" .. id .. "/languages")
  if type(languages) == "table" then project._gitfleet_languages = languages end
  return project
end

-- GitLab counts contributors by commit author (name and email); there is
-- no login, id or profile URL.
function P.contributors(api, owner, repo)
  return util.list(api, "/projects/" .. project_id(owner, repo) .. "/repository/contributors",
    { query = { per_page = 100 } }, function(c)
      return { login = nil, id = nil, name = v(c.name), email = v(c.email), contributions = v(c.commits),
        html_url = nil }
    end)
end

function P.branches(api, owner, repo)
  return util.list(api, "/projects/" .. project_id(owner, repo) .. "/repository/branches",
    { query = { per_page = 100 } }, function(b)
      local commit = object(b.commit)
      return { name = v(b.name), commit_sha = commit and v(commit.id), protected = v(b.protected) }
    end)
end

function P.user_info(api)
  local u, err = api:get("/user")
  if not u then return nil, err end
  return { login = v(u.username), id = v(u.id), name = v(u.name), email = v(u.email) or v(u.public_email),
    html_url = v(u.web_url), type = v(u.bot) == true and "Bot" or "User", created_at = v(u.created_at) }
end

return P
