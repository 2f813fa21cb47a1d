/* Counters reported by fleet.stats(). */
#ifndef FLEET_STATS_H
#define FLEET_STATS_H

struct fleet_stats {
    long requests;        /* requests sent (attempts) */
    long responses_ok;    /* 2xx */
    long not_modified;    /* 304 served from the cache */
    long primary_limited; /* 403/429 with the budget spent */
    long secondary_limited;
    long unauthorized;    /* 401 */
    long server_errors;   /* 5xx */
    long network_errors;  /* connection failures, timeouts, truncated bodies */
    long client_errors;   /* other 4xx, returned to the caller */
    long retries;
    long merged;          /* identical GETs served by one request in flight */
    double waited;        /* seconds tasks spent waiting for budget or backoff */
    long long bytes;      /* response bytes received (after decompression) */
    long shared_syncs;    /* budget updates sent to the shared store (Redis) */
};

#endif
