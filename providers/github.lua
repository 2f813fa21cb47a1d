-- GitHub and GitHub Enterprise Server (base_url https://HOST/api/v3).
--
-- Budgets: x-ratelimit-* headers, one budget per user per resource (all of
-- a user's personal tokens share it). /rate_limit costs no quota.
-- Pagination: Link header; rel="last" lets the host fetch pages at once.
local P = {
  title = "GitHub",
  base_url = "https://api.github.com",
  auth = { header = "Authorization", scheme = "Bearer" },
  budget = {
    limit = "x-ratelimit-limit",
    remaining = "x-ratelimit-remaining",
    used = "x-ratelimit-used",
    reset = "x-ratelimit-reset",
    reset_kind = "epoch",
    resource = "x-ratelimit-resource",
    default_resource = "core",
    -- all personal tokens of one user draw on that user's budget
    per_account = true,
  },
  limits = {
    statuses = { 403, 429 },
    -- GitHub's words for a secondary limit; a primary limit reads
    -- "API rate limit exceeded" with remaining 0.
    secondary_patterns = { "secondary rate limit", "abuse detection", "temporarily blocked" },
  },
  pagination = { style = "link", page_param = "page" },
  headers = {
    ["Accept"] = "application/vnd.github+json",
    ["X-GitHub-Api-Version"] = "2022-11-28",
  },
}

local util = require("fleet.plugin")
local v, esc, object = util.value, util.escape, util.object

-- Organisations list private and internal repositories to members; users'
-- lists are public ones. A name that is not an organisation answers 404
-- on /orgs, and is then fetched as a user (remembered, see owner_pages).
function P.repositories(api, owner, opts)
  local query = { per_page = 100, type = opts.type }
  return api:owner_pages(owner, "/orgs/" .. esc(owner) .. "/repos", { query = query },
    "/users/" .. esc(owner) .. "/repos", { query = query })
end

-- What normalize_repository reads of a listed repository: only these
-- fields of each item are built when a page is decoded.
P.repository_keys = {
  id = true, name = true, full_name = true, owner = { login = true }, description = true, html_url = true,
  clone_url = true, ssh_url = true, default_branch = true, language = true, private = true, visibility = true,
  fork = true, archived = true, stargazers_count = true, forks_count = true, watchers_count = true,
  open_issues_count = true, topics = true, created_at = true, updated_at = true, pushed_at = true,
}

function P.normalize_repository(r)
  r = object(r) or {} -- the host passes objects only; anything else reads as empty
  local owner = object(r.owner)
  local topics = v(r.topics)
  return {
    id = v(r.id),
    name = v(r.name),
    full_name = v(r.full_name),
    owner = owner and v(owner.login),
    description = v(r.description),
    html_url = v(r.html_url),
    clone_url = v(r.clone_url),
    ssh_url = v(r.ssh_url),
    default_branch = v(r.default_branch),
    language = v(r.language),
    private = v(r.private),
    visibility = v(r.visibility) or (r.private == true and "private") or (r.private == false and "public") or nil,
    fork = v(r.fork),
    archived = v(r.archived),
    stargazers_count = v(r.stargazers_count),
    forks_count = v(r.forks_count),
    watchers_count = v(r.watchers_count),
    open_issues_count = v(r.open_issues_count),
    topics = topics or nil,
    created_at = v(r.created_at),
    updated_at = v(r.updated_at),
    pushed_at = v(r.pushed_at),
  }
end

function P.repository_details(api, owner, repo)
  return api:get("/repos/" .. esc(owner) .. "/" .. esc(repo))
end

function P.contributors(api, owner, repo)
  return util.list(api, "/repos/" .. esc(owner) .. "/" .. esc(repo) .. "/contributors",
    { query = { per_page = 100 } }, function(c)
      return { login = v(c.login), id = v(c.id), name = v(c.name), email = v(c.email),
        contributions = v(c.contributions), html_url = v(c.html_url) }
    end)
end

function P.branches(api, owner, repo)
  return util.list(api, "/repos/" .. esc(owner) .. "/" .. esc(repo) .. "/branches",
    { query = { per_page = 100 } }, function(b)
      local commit = object(b.commit)
      return { name = v(b.name), commit_sha = commit and v(commit.sha), protected = v(b.protected) }
    end)
end

function P.user_info(api)
  local u, err = api:get("/user")
  if not u then return nil, err end
  return { login = v(u.login), id = v(u.id), name = v(u.name), email = v(u.email),
    html_url = v(u.html_url), type = v(u.type), created_at = v(u.created_at) }
end

-- Budgets from /rate_limit, which does not count against the limit.
function P.rate_limit(api)
  local data, err = api:get("/rate_limit", { free = true, cache = false })
  if not data then return nil, err end
  local out = {}
  for resource, b in pairs(v(data.resources) or {}) do
    out[#out + 1] = { resource = resource, limit = v(b.limit), remaining = v(b.remaining),
      used = v(b.used), reset = v(b.reset) }
  end
  return out
end

return P
