// Peer for bench/run.py: list every repository of the given owners with
// octokit (@octokit/rest + plugin-throttling + plugin-retry), one Octokit
// client per token, a fixed number of owners in flight, and write one JSON
// line per repository with the fields gitfleet writes.
//
//   BENCH_TOKENS=tok1,tok2,... node bench/peer_octokit.mjs BASE_URL OWNERS_FILE OUTPUT
//
// Environment: BENCH_OWNERS_IN_FLIGHT (default 8), BENCH_RETRIES (default 5),
// BENCH_RETRY_BASE_MS (default 50; plugin-retry waits (n+1)² × this).
// Exit status 0 when every owner was listed, 1 otherwise.
import { readFileSync, openSync, writeSync, closeSync } from "node:fs";
import { Octokit } from "@octokit/rest";
import { retry } from "@octokit/plugin-retry";
import { throttling } from "@octokit/plugin-throttling";

const [baseUrl, ownersFile, output] = process.argv.slice(2);
if (!baseUrl || !ownersFile || !output) {
  console.error("usage: BENCH_TOKENS=t1,t2 node peer_octokit.mjs BASE_URL OWNERS_FILE OUTPUT");
  process.exit(2);
}
const tokens = (process.env.BENCH_TOKENS || "").split(",").filter(Boolean);
const inFlight = Number(process.env.BENCH_OWNERS_IN_FLIGHT || 8);
const retries = Number(process.env.BENCH_RETRIES || 5);
const retryBaseMs = Number(process.env.BENCH_RETRY_BASE_MS || 50);
const owners = readFileSync(ownersFile, "utf8").split("\n").map((s) => s.trim()).filter(Boolean);

// The same plugin order as the `octokit` meta-package: retry, then throttling.
const MyOctokit = Octokit.plugin(retry, throttling);
// Quiet: plugin-request-log reports every 4xx (each user's /orgs probe) at
// error level. Failures that matter are printed below.
const quietLog = { debug() {}, info() {}, warn() {}, error() {} };
let rateLimitWaits = 0;
let secondaryWaits = 0;

const clients = tokens.map((auth) => new MyOctokit({
  auth,
  baseUrl,
  log: quietLog,
  retry: { retries, retryAfterBaseValue: retryBaseMs },
  throttle: {
    // As the plugin's README shows: log, and return true to retry. The README
    // retries once; a quota-bound crawl needs a few (bounded) more.
    onRateLimit: (retryAfter, options, octokit, retryCount) => {
      rateLimitWaits++;
      octokit.log.warn(`Request quota exhausted for request ${options.method} ${options.url}`);
      return retryCount < 5;
    },
    onSecondaryRateLimit: (retryAfter, options, octokit, retryCount) => {
      secondaryWaits++;
      octokit.log.warn(`SecondaryRateLimit detected for request ${options.method} ${options.url}`);
      return retryCount < 5;
    },
  },
}));

const out = openSync(output, "w");
let written = 0;
let badPages = 0;

function record(r) {
  return {
    provider: "github",
    id: r.id,
    name: r.name,
    full_name: r.full_name,
    owner: r.owner ? r.owner.login : null,
    description: r.description ?? null,
    html_url: r.html_url ?? null,
    clone_url: r.clone_url ?? null,
    ssh_url: r.ssh_url ?? null,
    default_branch: r.default_branch ?? null,
    language: r.language ?? null,
    private: r.private ?? null,
    visibility: r.visibility ?? null,
    fork: r.fork ?? null,
    archived: r.archived ?? null,
    stargazers_count: r.stargazers_count ?? null,
    forks_count: r.forks_count ?? null,
    watchers_count: r.watchers_count ?? null,
    open_issues_count: r.open_issues_count ?? null,
    topics: r.topics ?? null,
    created_at: r.created_at ?? null,
    updated_at: r.updated_at ?? null,
    pushed_at: r.pushed_at ?? null,
  };
}

// octokit.paginate with a map function: each page is written as it arrives
// and nothing is kept.
function writePage(response) {
  // @octokit/request turns a body it cannot read (a truncated one) into "",
  // and paginate turns "" into an empty page, whose Link header still leads
  // on. Counted here (a listing's genuine empty page has no Link header), not
  // repaired: this is what octokit hands its users.
  if (!Array.isArray(response.data) || (response.data.length === 0 && response.headers.link)) {
    badPages++;
    return [];
  }
  let text = "";
  for (const r of response.data) text += JSON.stringify(record(r)) + "\n";
  if (text) writeSync(out, text);
  written += response.data.length;
  return [];
}

async function listOwner(octokit, owner) {
  try {
    await octokit.paginate(octokit.rest.repos.listForOrg, { org: owner, per_page: 100 }, writePage);
    return;
  } catch (err) {
    if (err.status !== 404) throw err;
  }
  await octokit.paginate(octokit.rest.repos.listForUser, { username: owner, per_page: 100 }, writePage);
}

let next = 0;
let failed = 0;
async function worker() {
  while (next < owners.length) {
    const i = next++;
    try {
      await listOwner(clients[i % clients.length], owners[i]);
    } catch (err) {
      failed++;
      console.error(`octokit: ${owners[i]}: ${err.status || ""} ${err.message}`);
    }
  }
}

await Promise.all(Array.from({ length: Math.min(inFlight, owners.length) }, worker));
closeSync(out);
console.error(JSON.stringify({ peer: "octokit", repositories: written, failed_owners: failed,
  unreadable_pages: badPages, rate_limit_waits: rateLimitWaits, secondary_waits: secondaryWaits }));
process.exit(failed ? 1 : 0);
