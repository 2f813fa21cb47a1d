/* The pool's shared store: budgets in Redis, so that many gitfleet
 * processes on many machines draw on one account's budget without
 * overdrawing it.
 *
 * The in-process pool keeps choosing tokens; the store only limits what it
 * may reserve on a budget to a grant: units this process leased from Redis
 * in a block, so most requests cost no round trip. Units are settled (the
 * lease shrinks) when the responses that reflect them are merged into the
 * shared figures; unused units go back when idle; a process that dies
 * gives its units back by the lease's expiry. Pauses (secondary limits),
 * tokens disabled by 401 and learned accounts are shared too. Tokens are
 * named in Redis only by a keyed hash of their secret with a salt kept in
 * Redis (one per deployment).
 *
 * Redis calls are made from fleet_shared_turn, once per turn of the loop,
 * and answered asynchronously; while Redis is unreachable nothing new is
 * granted, so requests on shared budgets wait until it is back. */
#ifndef FLEET_POOL_SHARED_H
#define FLEET_POOL_SHARED_H

#include <stdbool.h>
#include <stddef.h>

struct fleet_host;
struct fleet_shared;
struct fleet_token;
struct fleet_budget;
struct fleet_redis;

/* Connects (one error line when Redis is down or refuses), reads the salt
 * and the accounts other processes learned. */
struct fleet_shared *fleet_shared_new(struct fleet_host *host, char *err, size_t errlen);
/* Gives back every unused unit and waits briefly for Redis to confirm. */
void fleet_shared_free(struct fleet_shared *s);

struct fleet_redis *fleet_shared_redis(struct fleet_shared *s);
/* This process's name in Redis: host:pid:random. */
const char *fleet_shared_worker(struct fleet_shared *s);

/* The pool's hooks. allowance: how many of `local` units t may reserve on b
 * now (0 asks Redis for a block at the next turn). */
long fleet_shared_allowance(struct fleet_shared *s, struct fleet_token *t, struct fleet_budget *b, long local,
                            double now);
void fleet_shared_took(struct fleet_shared *s, struct fleet_budget *b, double now);
void fleet_shared_released(struct fleet_shared *s, struct fleet_budget *b);
/* b was just settled from a server's report: share its figures. */
void fleet_shared_observed(struct fleet_shared *s, struct fleet_token *t, struct fleet_budget *b);
/* t was paused or disabled. */
void fleet_shared_token_changed(struct fleet_shared *s, struct fleet_token *t);
void fleet_shared_account(struct fleet_shared *s, struct fleet_token *t);

/* The loop's side: sends what is due; returns when to be called next. */
double fleet_shared_turn(struct fleet_shared *s, double now);

/* What shared budgets wait for ("" when nothing): for the progress line. */
const char *fleet_shared_waiting(struct fleet_shared *s);

/* The process will send no request for a while (a worker waiting for the
 * queue): the units it holds, settled ones and unused ones, go back now,
 * ahead of anything it sends next. */
void fleet_shared_idle(struct fleet_shared *s);

#endif
