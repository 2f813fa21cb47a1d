/* Stopping Lua code that never yields.
 *
 * The scheduler notices a signal between resumes; a script stuck in
 * `while true do end` never gets back to it. So, as lua.c does for SIGINT,
 * the handler sets a hook on the coroutine that is running (lua_sethook is
 * safe to call from a signal handler); the hook lets the code run for the
 * grace that requests in flight also get, then raises an "interrupted"
 * error at every count of instructions, so a pcall in a loop cannot keep
 * it alive. The error is a table (not a string) so that the host's
 * plugin_call passes it on instead of calling it a plugin's decode error. */
#include "interrupt.h"

#include <signal.h>
#include <sys/time.h>
#include <time.h>

#include <lauxlib.h>

#include "lfleet.h"

static lua_State *volatile running;
static volatile sig_atomic_t armed;
static volatile double stop_at;

static double monotonic_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void stop_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    if (monotonic_now() < stop_at)
        return;
    /* Every instruction from now on: no handler gets to loop again. */
    lua_sethook(L, stop_hook, LUA_MASKCOUNT, 1);
    fleet_push_error(L, "interrupted", "the run was stopped while Lua code was still running");
    lua_error(L);
}

static void set_hook(lua_State *L)
{
    lua_sethook(L, stop_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1000);
}

void fleet_interrupt_enter(lua_State *co)
{
    running = co;
    if (armed)
        set_hook(co);
}

void fleet_interrupt_leave(void) { running = NULL; }

void fleet_interrupt_arm(void)
{
    if (!armed) {
        stop_at = monotonic_now() + FLEET_INTERRUPT_GRACE;
        armed = 1;
    }
    lua_State *L = running;
    if (L)
        set_hook(L);
}

void fleet_interrupt_set_timeout(double seconds)
{
    struct itimerval t = {0};
    t.it_value.tv_sec = (time_t)seconds;
    t.it_value.tv_usec = (suseconds_t)((seconds - (double)t.it_value.tv_sec) * 1e6);
    if (t.it_value.tv_sec == 0 && t.it_value.tv_usec == 0)
        t.it_value.tv_usec = 1;
    setitimer(ITIMER_REAL, &t, NULL);
}

void fleet_interrupt_cancel_timeout(void)
{
    struct itimerval off = {0};
    setitimer(ITIMER_REAL, &off, NULL);
}
