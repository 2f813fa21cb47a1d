-- Gitea, Forgejo and Codeberg (base_url https://HOST/api/v1; Codeberg by
-- default). One plugin serves every instance: configure more with
-- `plugin: gitea` and their own base_url.
--
-- Auth: "Authorization: token TOKEN" (an access token from the user's
-- settings, Applications). The host attaches it; this file never sees a
-- secret.
--
-- Budgets: Gitea and Forgejo have no API rate limit and send no budget
-- headers, so this plugin names none (and there is no rate-limit endpoint,
-- so no rate_limit function). An instance behind a limiting proxy that
-- answers 429 gets the token paused (for Retry-After when sent).
--
-- Pagination: `page` and `limit` (at most 50 by default:
-- [api] MAX_RESPONSE_ITEMS), a Link header with rel="last" (so the host
-- fetches the remaining pages concurrently) and X-Total-Count.
local P = {
  title = "Gitea / Forgejo",
  base_url = "https://codeberg.org/api/v1",
  auth = { header = "Authorization", scheme = "token" },
  budget = { default_resource = "api" },
  limits = {
    statuses = { 429 },
  },
  pagination = { style = "link", page_param = "page" },
  headers = { ["Accept"] = "application/json" },
}

local util = require("fleet.plugin")
local v, esc, filtered, object = util.value, util.escape, util.filtered, util.object

local PAGE = 50


-- Gitea's owner listings take no type filter: the types are applied here.
-- "owner" and "all" are the whole listing (an owner's own repositories).
local TYPES = {
  all = true,
  owner = true,
  public = function(r) return v(r.private) == false end,
  private = function(r) return v(r.private) == true end,
  forks = function(r) return v(r.fork) == true end,
  sources = function(r) return v(r.fork) == false end,
}

-- An organisation's repositories, else (404) a user's.
function P.repositories(api, owner, opts)
  local keep = opts.type and TYPES[opts.type]
  if opts.type and not keep then
    error(("gitea: unknown repository type '%s' (all, owner, public, private, forks, sources)")
      :format(tostring(opts.type)), 0)
  end
  local query = { limit = PAGE }
  local pages, err = api:owner_pages(owner, "/orgs/" .. esc(owner) .. "/repos", { query = query },
    "/users/" .. esc(owner) .. "/repos", { query = query })
  if not pages then return nil, err end
  if type(keep) == "function" then return filtered(pages, keep) end
  return pages
end

-- Gitea sends "" for an unset language (nil here) and for a missing
-- description (kept: Gitea cannot tell the two apart). It has no push
-- time: pushed_at is nil.
-- What normalize_repository and the type filters read of a listed
-- repository: only these fields of each item are built when a page is
-- decoded.
P.repository_keys = {
  id = true, name = true, full_name = true, owner = { login = true, username = true }, description = true,
  html_url = true, clone_url = true, ssh_url = true, default_branch = true, language = true, private = true,
  internal = true, fork = true, archived = true, stars_count = true, forks_count = true, watchers_count = true,
  open_issues_count = true, topics = true, created_at = true, updated_at = true,
}

function P.normalize_repository(r)
  r = object(r) or {} -- the host passes objects only; anything else reads as empty
  local owner = object(r.owner)
  local private, internal = v(r.private), v(r.internal)
  local visibility
  if internal == true then
    visibility = "internal"
  elseif private ~= nil then
    visibility = private and "private" or "public"
  end
  local language = v(r.language)
  if language == "" then language = nil end
  return {
    id = v(r.id),
    name = v(r.name),
    full_name = v(r.full_name),
    owner = owner and (v(owner.login) or v(owner.username)),
    description = v(r.description),
    html_url = v(r.html_url),
    clone_url = v(r.clone_url),
    ssh_url = v(r.ssh_url),
    default_branch = v(r.default_branch),
    language = language,
    private = private,
    visibility = visibility,
    fork = v(r.fork),
    archived = v(r.archived),
    stargazers_count = v(r.stars_count),
    forks_count = v(r.forks_count),
    watchers_count = v(r.watchers_count),
    open_issues_count = v(r.open_issues_count),
    topics = v(r.topics),
    created_at = v(r.created_at),
    updated_at = v(r.updated_at),
    pushed_at = nil,
  }
end

function P.repository_details(api, owner, repo)
  return api:get("/repos/" .. esc(owner) .. "/" .. esc(repo))
end

-- Gitea's API has no contributors endpoint (the web UI's contributor
-- graph is not part of it): no `contributors` here.

function P.branches(api, owner, repo)
  return util.list(api, "/repos/" .. esc(owner) .. "/" .. esc(repo) .. "/branches",
    { query = { limit = PAGE } }, function(b)
      local commit = object(b.commit)
      return { name = v(b.name), commit_sha = commit and v(commit.id), protected = v(b.protected) }
    end)
end

function P.user_info(api)
  local u, err = api:get("/user")
  if not u then return nil, err end
  local name = v(u.full_name)
  if name == "" then name = nil end
  local email = v(u.email)
  if email == "" then email = nil end
  return { login = v(u.login), id = v(u.id), name = name, email = email, html_url = v(u.html_url),
    type = "User", created_at = v(u.created) }
end

return P
