-- The record shapes every provider normalises to. A field a provider has
-- no value for is nil (written as JSON null), never invented.
local records = {}

records.repository_fields = {
  "provider", "id", "name", "full_name", "owner", "description", "html_url",
  "clone_url", "ssh_url", "default_branch", "language", "private", "visibility",
  "fork", "archived", "stargazers_count", "forks_count", "watchers_count",
  "open_issues_count", "topics", "created_at", "updated_at", "pushed_at",
}

records.user_fields = { "provider", "login", "id", "name", "email", "html_url", "type", "created_at" }

records.contributor_fields = { "provider", "login", "id", "name", "email", "contributions", "html_url" }

records.branch_fields = { "provider", "name", "commit_sha", "protected" }

return records
