/* Stopping Lua code that never yields, on a signal or lua.script_timeout. */
#ifndef FLEET_INTERRUPT_H
#define FLEET_INTERRUPT_H

#include <lua.h>

/* Seconds Lua code may go on running after a stop was asked for (requests
 * in flight get as long to finish, see sched.c). */
#define FLEET_INTERRUPT_GRACE 1.0

/* The scheduler brackets each lua_resume with these, so that a signal
 * knows which coroutine is running. */
void fleet_interrupt_enter(lua_State *co);
void fleet_interrupt_leave(void);

/* From a signal handler (async-signal-safe): Lua code that is still
 * running FLEET_INTERRUPT_GRACE seconds from now raises an "interrupted"
 * error, whether or not it ever yields. */
void fleet_interrupt_arm(void);

/* Sends SIGALRM after seconds (> 0), which stops the run as SIGTERM does;
 * fleet_interrupt_cancel_timeout() takes it back. */
void fleet_interrupt_set_timeout(double seconds);
void fleet_interrupt_cancel_timeout(void);

#endif
